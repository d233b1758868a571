"""The SQLite store: durable on one machine, safe for several processes on one file.

Durability: WAL journal, ``synchronous=FULL`` by default (a commit is fsynced
before it returns). ``transaction()`` is re-entrant: the outermost block is
``BEGIN IMMEDIATE ... COMMIT`` (the write lock is taken up front, so two
processes never deadlock upgrading a read to a write), inner blocks are
savepoints that roll back alone. A call outside any block is its own
transaction. Every SQLite fault (locked, read-only, disk full, I/O error) is
raised as ``Unavailable`` after rolling back what it touched. The nesting,
commit and rollback are ``sql_tx``'s, shared with the PostgreSQL store.

Each thread gets its own connection (the real-time dispatcher calls from
another thread than the stdio loop); SQLite's locks order them like processes.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import NoReturn

from jobsched.errors import JobExists, JobschedError, Unavailable
from jobsched.jobs import Job, JobState
from jobsched.stores.base import RECENT_RUNS, RunRecord, Store
from jobsched.stores.sql_tx import Block, Transactions, TxState
from jobsched.stores.sqlite_schema import (
    COLUMNS,
    SELECT,
    check_header,
    ensure_schema,
    job_from_row,
    job_to_row,
    list_query,
    probe,
)

log = logging.getLogger("jobsched.sqlite")

# The sqlite3 module binds None through its adapter lookup, which probes
# __adapt__/__conform__ and costs ~0.3 us per None: a job row has a dozen. A
# registered identity adapter is found first and is twice as fast. Binding is
# unchanged (None is still NULL), so other sqlite3 users in the process see no
# difference.
sqlite3.register_adapter(type(None), lambda value: value)

DEFAULT_BUSY_TIMEOUT_MS = 5000
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")

_UPDATE = ", ".join(f"{c} = ?" for c in COLUMNS[1:])
_INSERT = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) "
    f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})"
)
_REPLACE = f"UPDATE jobs SET {_UPDATE}, touched_ms = ? WHERE job_id = ? AND state = ?"
_CLAIM = (
    "UPDATE jobs SET state = 'running', locked_by = ?, locked_until = ?, touched_ms = ? "
    # INDEXED BY: without statistics the planner prefers jobs_state, then sorts
    # every scheduled job to find the first few; jobs_due is already in order.
    "WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_due "
    "WHERE state IN ('scheduled', 'retrying') "
    "AND due_at <= ? ORDER BY due_at, seq LIMIT ?) "
    f"RETURNING {SELECT}"
)
_FINAL = "('completed', 'dead', 'cancelled')"

# What an operator should read for each SQLite primary result code.
_CAUSES = {
    "SQLITE_BUSY": "the database is locked by another connection",
    "SQLITE_LOCKED": "the database is locked by another connection",
    "SQLITE_READONLY": "the database file is read-only",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "a disk I/O error occurred",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_CORRUPT": "the database file is corrupt",
    "SQLITE_NOTADB": "the file is not a SQLite database",
    "SQLITE_NOMEM": "out of memory",
}


def describe(exc: sqlite3.Error) -> str:
    """The operator's reading of a SQLite error, with SQLite's own words after it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    cause = _CAUSES.get(primary)
    return f"{cause} ({exc})" if cause else str(exc)


def _is_fault(exc: BaseException) -> bool:
    """SQLite faults of the environment (not bugs in our SQL): answered with 11."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


@dataclass(slots=True)
class _Conn(TxState):
    """One thread's connection and where it is in a transaction."""

    db: sqlite3.Connection = field(kw_only=True)
    read_only: str | None = None  # why this transaction could only get a read lock


class SQLiteStore(Store, Transactions[_Conn]):
    tx_errors = sqlite3.Error
    tx_doomed = "the transaction was rolled back"
    tx_commit_failed = "the commit failed"

    def __init__(
        self, path: str, synchronous: str = "FULL", busy_timeout_ms: int | None = None
    ) -> None:
        self.path = path
        self.synchronous = synchronous.upper()
        if self.synchronous not in SYNCHRONOUS:
            raise JobschedError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        env = os.environ.get("JOBSCHED_SQLITE_BUSY_TIMEOUT_MS") or DEFAULT_BUSY_TIMEOUT_MS
        if busy_timeout_ms is None and not str(env).isdigit():
            raise JobschedError(
                f"JOBSCHED_SQLITE_BUSY_TIMEOUT_MS must be milliseconds, not {env!r}"
            )
        self.busy_timeout_ms = busy_timeout_ms or int(env)
        self._tls = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        check_header(path)
        try:
            conn = self._local()
            ensure_schema(conn.db, path)
            probe(conn.db)
        except (sqlite3.DatabaseError, Unavailable) as exc:
            self.close()
            cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
            raise _refusal(path, cause if isinstance(cause, sqlite3.Error) else None) from exc
        except BaseException:
            self.close()
            raise

    # -- connections and transactions ---------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # used by one thread; close() may run on another
        )
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        db.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache per connection
        db.execute("PRAGMA temp_store = MEMORY")
        return db

    def _local(self) -> _Conn:
        conn: _Conn | None = getattr(self._tls, "conn", None)
        if conn is None:
            try:
                db = self._connect()
            except sqlite3.Error as exc:
                if not _is_fault(exc):
                    raise
                raise Unavailable(f"cannot open {self.path}: {describe(exc)}") from exc
            conn = self._tls.conn = _Conn(db=db)
            with self._all_lock:
                self._all.append(db)
        return conn

    def transaction(self) -> AbstractContextManager[None]:
        return Block(self, self._local())

    # The hooks of sql_tx.Transactions.

    def _tx_begin(self, conn: _Conn) -> None:
        conn.read_only = None
        try:
            conn.db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            if not _is_fault(exc):
                raise
            # No write lock (another process holds it, or the file is read-only):
            # reads can still be served; every write in this block answers 11.
            conn.read_only = describe(exc)
            try:
                conn.db.execute("BEGIN")
            except sqlite3.Error as exc2:
                conn.doomed = describe(exc2)

    def _tx_commit(self, conn: _Conn) -> None:
        conn.db.execute("COMMIT")

    def _tx_rollback(self, conn: _Conn) -> None:
        _rollback(conn.db)

    def _tx_control(self, conn: _Conn, sql: str) -> None:
        try:
            conn.db.execute(sql)
        except sqlite3.Error as exc:
            self._fault(conn, exc)

    def _tx_describe(self, exc: Exception) -> str:
        return describe(exc) if isinstance(exc, sqlite3.Error) else str(exc)

    def _fault(self, conn: _Conn, exc: sqlite3.Error) -> NoReturn:
        """Turn a SQLite error inside a transaction into Unavailable (or re-raise a bug)."""
        if not _is_fault(exc):
            raise exc
        if conn.depth and not conn.db.in_transaction:
            # SQLite rolled the whole transaction back (it may on FULL, IOERR,
            # BUSY): earlier writes of this block are gone, so none may commit.
            conn.doomed = describe(exc)
        raise Unavailable(f"storage unavailable, nothing changed: {describe(exc)}") from exc

    def _check(self, conn: _Conn, write: bool) -> None:
        if conn.doomed is not None:
            raise Unavailable(f"storage unavailable, nothing changed: {conn.doomed}")
        if write and conn.read_only is not None:
            raise Unavailable(f"storage unavailable, nothing changed: {conn.read_only}")

    def _use(self, write: bool) -> _Use:
        return _Use(self, write)

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for db in conns:
            try:
                db.close()
            except sqlite3.Error:  # closing is best effort
                log.warning("closing %s failed", self.path, exc_info=True)
        self._tls = threading.local()

    # -- jobs -----------------------------------------------------------------

    def insert(self, job: Job) -> Job:
        with self._use(True) as db:
            try:
                # seq is the rowid: lastrowid is it, and far cheaper than RETURNING.
                seq = db.execute(_INSERT, (*job_to_row(job), self.clock())).lastrowid
            except sqlite3.IntegrityError as exc:
                raise JobExists(job.job_id) from exc
        assert seq is not None
        job.seq = seq
        return job

    def get(self, job_id: str) -> Job | None:
        with self._use(False) as db:
            row = db.execute(f"SELECT {SELECT} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        values = (*job_to_row(job)[1:], self.clock(), job.job_id, expect_state.value)
        sql = _REPLACE
        if expect_owner is not None:
            sql, values = sql + " AND locked_by = ?", (*values, expect_owner)
        with self._use(True) as db:
            # seq never changes: the caller's job was evolved from the stored one.
            return db.execute(sql, values).rowcount == 1

    def claim_due(self, now: int, limit: int, owner: str, lease_until: int) -> list[Job]:
        with self._use(True) as db:
            rows = db.execute(_CLAIM, (owner, lease_until, self.clock(), now, limit)).fetchall()
        jobs = [job_from_row(r) for r in rows]
        # RETURNING gives rows in no promised order; the claim order is (due_at, seq).
        jobs.sort(key=lambda j: (j.due_at or 0, j.seq))
        return jobs

    def next_due(self) -> int | None:
        with self._use(False) as db:
            row = db.execute(
                "SELECT due_at FROM jobs INDEXED BY jobs_due "
                "WHERE state IN ('scheduled', 'retrying') "
                "AND due_at IS NOT NULL ORDER BY due_at LIMIT 1"
            ).fetchone()
        return None if row is None else int(row[0])

    def list_jobs(
        self, state: JobState | None, task: str | None, after: str | None, limit: int
    ) -> list[Job]:
        with self._use(False) as db:
            return list_query(
                lambda sql, args: db.execute(sql, args).fetchall(), "?", state, task, after, limit
            )

    def counts(self) -> dict[JobState, int]:
        with self._use(False) as db:
            rows = db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {JobState(s): n for s, n in rows}

    def extend_leases(self, owner: str, until: int) -> int:
        with self._use(True) as db:
            cur = db.execute(
                "UPDATE jobs SET locked_until = ?, touched_ms = ? "
                "WHERE state = 'running' AND locked_by = ?",
                (until, self.clock(), owner),
            )
        return cur.rowcount

    def expired_leases(self, now: int, limit: int) -> list[Job]:
        with self._use(False) as db:
            rows = db.execute(
                f"SELECT {SELECT} FROM jobs WHERE state = 'running' AND locked_until < ? "
                "ORDER BY locked_until, seq LIMIT ?",
                (now, limit),
            ).fetchall()
        return [job_from_row(r) for r in rows]

    # -- run history --------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        with self._use(True) as db:
            db.execute(
                "INSERT INTO runs (job_id, started_at, finished_at, outcome, error, node, "
                "recorded_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.job_id, run.started_at, run.finished_at, run.outcome, run.error, run.node,
                 self.clock()),
            )  # fmt: skip

    def recent_runs(self, job_id: str, limit: int = RECENT_RUNS) -> list[RunRecord]:
        with self._use(False) as db:
            rows = db.execute(
                "SELECT job_id, started_at, finished_at, outcome, error, node FROM runs "
                "WHERE job_id = ? ORDER BY id DESC LIMIT ?",
                (job_id, limit),
            ).fetchall()
        return [RunRecord(*r) for r in rows]

    def prune(self, finished_before: int, batch: int) -> int:
        with self.transaction(), self._use(True) as db:
            before = db.total_changes
            old = db.execute(
                f"SELECT seq, job_id FROM jobs WHERE state IN {_FINAL} AND touched_ms < ? "
                "ORDER BY touched_ms LIMIT ?",
                (finished_before, batch),
            ).fetchall()
            db.executemany("DELETE FROM runs WHERE job_id = ?", [(jid,) for _, jid in old])
            db.executemany("DELETE FROM jobs WHERE seq = ?", [(seq,) for seq, _ in old])
            db.execute(
                "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE recorded_ms < ? "
                "ORDER BY recorded_ms LIMIT ?)",
                (finished_before, batch),
            )
            return db.total_changes - before


class _Use:
    """The connection for one store call: inside the caller's transaction, or
    (for a write) in a transaction of its own; reads outside one autocommit.
    SQLite faults leave it as Unavailable."""

    __slots__ = ("block", "conn", "store", "write")

    def __init__(self, store: SQLiteStore, write: bool) -> None:
        self.store, self.write = store, write
        self.block: Block[_Conn] | None = None

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        conn = self.conn = store._local()
        if conn.depth == 0 and self.write:
            self.block = Block(store, conn)
            self.block.__enter__()
        try:
            store._check(conn, self.write)
        except Unavailable as exc:
            if self.block is not None:
                self.block.__exit__(Unavailable, exc, None)
            raise
        return conn.db

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        error = exc if isinstance(exc, BaseException) else None
        if isinstance(exc, sqlite3.Error):
            try:
                self.store._fault(self.conn, exc)
            except BaseException as translated:
                error = translated
        if self.block is not None:
            self.block.__exit__(None if error is None else type(error), error, None)
        if error is not None and error is not exc:
            raise error from exc if isinstance(exc, BaseException) else None


def _refusal(path: str, exc: sqlite3.Error | None) -> JobschedError:
    """Why the file cannot be used, in words that say what to do about it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = "unknown error" if exc is None else describe(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or type(exc) is sqlite3.DatabaseError:
        return JobschedError(
            f"{path} is corrupt or not a SQLite database ({text}); refusing to use it: "
            "restore a backup (see docs/operations.md) or point --db at a new file"
        )
    return JobschedError(f"cannot open {path}: {text}")


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:  # the connection is broken; SQLite undoes it on reopen
            log.warning("rollback failed", exc_info=True)
