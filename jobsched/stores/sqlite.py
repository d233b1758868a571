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

Beyond the Store interface: ``WakeupListener`` (a sleeping dispatcher notices
other connections' commits, by polling ``PRAGMA data_version``), and
``borrow(conn)``, which runs this thread's calls inside the application's own
open transaction on its ``sqlite3.Connection`` (see ``sqlite_conn``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import NoReturn

from jobsched.errors import JobExists, JobschedError, Unavailable
from jobsched.jobs import Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.stores import sql_queues as sq
from jobsched.stores import sqlite_sql as q
from jobsched.stores.base import RECENT_RUNS, DuplicateKey, RunRecord, Store, first_taken
from jobsched.stores.sql_tx import Block, Transactions, joined
from jobsched.stores.sqlite_conn import Conn as _Conn
from jobsched.stores.sqlite_conn import (
    DataVersionWakeups,
    borrowed,
    describe,
    refusal,
    rollback,
    wal_mode,
)
from jobsched.stores.sqlite_conn import Use as _Use
from jobsched.stores.sqlite_conn import is_fault as _is_fault
from jobsched.stores.sqlite_schema import (
    SELECT,
    check_header,
    ensure_schema,
    job_from_row,
    job_to_row,
    list_query,
    probe,
    run_time_values,
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


class SQLiteStore(Store, Transactions[_Conn], DataVersionWakeups):
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
        # Whether the last settings read found claims restricted, by ``limits``.
        self._restricted = {False: False, True: False}
        self._init_wakeups()
        check_header(path)
        try:
            conn = self._local()
            ensure_schema(conn.db, path)
            probe(conn.db)
        except (sqlite3.DatabaseError, Unavailable) as exc:
            self.close()
            cause = exc if isinstance(exc, sqlite3.Error) else exc.__cause__
            raise refusal(path, cause if isinstance(cause, sqlite3.Error) else None) from exc
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
        wal_mode(db, self.busy_timeout_ms / 1000)
        db.execute(f"PRAGMA synchronous = {self.synchronous}")
        db.execute("PRAGMA cache_size = -32768")  # 32 MiB of page cache per connection
        db.execute("PRAGMA temp_store = MEMORY")
        return db

    def _wait_connection(self) -> sqlite3.Connection:
        return self._local().db

    def borrow(self, db: sqlite3.Connection) -> AbstractContextManager[None]:
        """Run this thread's calls on the application's connection ``db``, inside
        its open transaction, in a savepoint (``sqlite_conn.borrowed``)."""
        return borrowed(self, db)

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
        rollback(conn.db)

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
        self._wait_db = None

    # -- jobs -----------------------------------------------------------------

    def insert(self, job: Job) -> Job:
        if job.unique_key is not None:
            return self._insert_unique(job, job.unique_key)
        with self._use(True) as db:
            try:
                # seq is the rowid: lastrowid is it, and far cheaper than RETURNING.
                seq = db.execute(q.INSERT, (*job_to_row(job), self.clock())).lastrowid
            except sqlite3.IntegrityError as exc:
                raise JobExists(job.job_id) from exc
        assert seq is not None
        job.seq = seq
        return job

    def _insert_unique(self, job: Job, key: str) -> Job:
        """Insert a job with a unique_key: the key row and the job, or neither."""
        try:
            with self.transaction(), self._use(True) as db:
                holder = sq.take_key(lambda sql, a: db.execute(sql, a).fetchall(), q.D, job)
                if holder is not None:
                    raise DuplicateKey(holder)
                seq = db.execute(q.INSERT, (*job_to_row(job), self.clock())).lastrowid
        except sqlite3.IntegrityError as exc:
            if "jobs.job_id" in str(exc):
                raise JobExists(job.job_id) from exc
            with self._use(False) as db:
                live = sq.live_holder(lambda sql, a: db.execute(sql, a).fetchall(), q.D, key)
            raise DuplicateKey(live or job.job_id) from exc
        assert seq is not None
        job.seq = seq
        return job

    def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        if not jobs:
            return []
        statements = list(q.insert_statements(jobs, self.clock()))
        try:
            # A block of its own (a savepoint inside the caller's): a taken id undoes the rest.
            with self.transaction(), self._use(True) as db:
                for sql, values in statements:
                    db.execute(sql, values)
                # The write lock is held and seq is AUTOINCREMENT: the batch's
                # seqs are consecutive, ending at the last rowid.
                last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        except sqlite3.IntegrityError:
            # Looked up once the block is undone, so that no row of this batch counts.
            taken = first_taken(jobs, set(self.get_many([job.job_id for job in jobs])))
            if taken is None:  # another constraint: a bug, not a taken id
                raise
            raise JobExists(taken) from None
        for seq, job in enumerate(jobs, last - len(jobs) + 1):
            job.seq = seq
        return list(jobs)

    def get(self, job_id: str) -> Job | None:
        with self._use(False) as db:
            row = db.execute(f"SELECT {SELECT} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        with self._use(False) as db:
            rows = q.in_chunks(db, f"SELECT {SELECT} FROM jobs", job_ids)
        return {job.job_id: job for job in map(job_from_row, rows)}

    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        values = (*run_time_values(job), self.clock(), job.job_id, expect_state.value)
        sql = q.REPLACE
        if expect_owner is not None:
            sql, values = sql + " AND locked_by = ?", (*values, expect_owner)
        with self._use(True) as db:
            try:
                # seq never changes: the caller's job was evolved from the stored one.
                return db.execute(sql, values).rowcount == 1
            except sqlite3.IntegrityError as exc:
                if job.unique_key is None:
                    raise
                # A final job made live again (retry_job) while another holds its key.
                rows = lambda sql, a: db.execute(sql, a).fetchall()  # noqa: E731
                raise DuplicateKey(sq.live_holder(rows, q.D, job.unique_key) or "") from exc

    def claim_due(
        self,
        now: int,
        limit: int,
        owner: str,
        lease_until: int,
        queues: frozenset[str] | None = None,
        limits: bool = True,
    ) -> list[Job]:
        # One transaction: the write lock, taken first, serialises every
        # process's claims, so counting a queue's free slots cannot race.
        with joined(self, self._local()), self._use(True) as db:
            run = lambda sql, args: db.execute(sql, args).fetchall()  # noqa: E731
            jobs: list[Job] = []
            plain = queues is None and not self._restricted[limits]
            if plain:  # no queue setting restricts it: one statement
                args = (owner, lease_until, self.clock(), now, limit)
                jobs = [job_from_row(r) for r in db.execute(q.CLAIM[limits], args)]
            if not jobs:
                lease = (owner, lease_until, self.clock())
                jobs, rules = sq.claim_restricted(
                    run, q.D, job_from_row, now, limit, lease, queues, limits, plain
                )
                self._restricted[limits] = sq.restricts(rules, limits)
        # RETURNING gives rows in no promised order; the claim order is (priority, due_at, seq).
        jobs.sort(key=lambda j: (j.priority, j.due_at or 0, j.seq))
        return jobs

    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        with self.transaction(), self._use(True) as db:
            return sq.configure(lambda sql, a: db.execute(sql, a).fetchall(), q.D, name, change)

    def queue_report(self) -> list[QueueReport]:
        with self._use(False) as db:
            return sq.report(lambda sql, a: db.execute(sql, a).fetchall())

    def queue_settings(self) -> list[QueueSettings]:
        with self._use(False) as db:
            return sq.all_settings(lambda sql, a: db.execute(sql, a).fetchall())

    def next_due(self, after: int | None = None) -> int | None:
        with self._use(False) as db:
            if after is None:
                row = db.execute(q.NEXT_DUE).fetchone()
            else:
                row = db.execute(q.NEXT_DUE_AFTER, (after,)).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def list_jobs(
        self,
        state: JobState | None,
        task: str | None,
        after: str | None,
        limit: int,
        queue: str | None = None,
    ) -> list[Job]:
        with self._use(False) as db:
            return list_query(
                lambda sql, args: db.execute(sql, args).fetchall(),
                "?",
                state,
                task,
                after,
                limit,
                queue,
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
        self.record_runs((run,))

    def record_runs(self, runs: Sequence[RunRecord]) -> None:
        stamp = self.clock()
        with self._use(True) as db:
            db.executemany(
                q.INSERT_RUN,
                [(r.job_id, r.started_at, r.finished_at, r.outcome, r.error, r.node, stamp)
                 for r in runs],
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
                f"SELECT seq, job_id FROM jobs WHERE state IN {q.FINAL} AND touched_ms < ? "
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
            sq.prune_keys(lambda sql, a: db.execute(sql, a).fetchall(), q.D, finished_before, batch)
            return db.total_changes - before
