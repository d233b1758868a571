"""The PostgreSQL store: several nodes share one database.

``PostgresStore("postgresql://user@host/db?schema=name")``: the optional
``schema`` parameter puts every table in that schema (created if missing), so
that several clusters, or tests, share one database. The schema comes from the
numbered migrations in ``sql/postgres/``, applied at start under an advisory
lock (nodes starting together do not race); a database newer than this code
is refused with ``StoreVersionError``.

Claims take due jobs in one statement with ``FOR UPDATE SKIP LOCKED``: two
nodes never take the same job, and neither waits for the other. Every state
change is guarded (``WHERE state = expected [AND locked_by = owner]``) and
its row count checked. Connections, transactions and faults: see
``postgres_conn``.

Beyond the Store interface it has every optional capability of ``base``, for
the real-time dispatcher and the service:

- ``ClusterClock``: ``db_now()``, the database's clock in epoch ms;
- ``WakeupListener``: ``wait_for_wakeup(timeout_s)`` sleeps until a write makes
  a job due sooner than any other (LISTEN/NOTIFY, see ``postgres_listen``);
  ``wake()`` ends such a wait early from another thread (shutdown);
- ``Membership``: ``heartbeat(owner, now)`` and ``nodes_seen(since)``.

And ``borrow(conn)``: this thread's calls run inside the application's own
transaction on its psycopg connection (see ``postgres_caller``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from jobsched.errors import JobExists, JobschedError, Malformed, Unavailable
from jobsched.jobs import RUNNABLE_STATES, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.stores import sql_queues as sq
from jobsched.stores.base import (
    RECENT_RUNS,
    ClusterClock,
    DuplicateKey,
    Membership,
    Replacement,
    RunRecord,
    Store,
    WakeupListener,
    first_taken,
)
from jobsched.stores.sqlite_schema import COLUMNS, SELECT, job_from_row, job_to_row, list_query

if TYPE_CHECKING:
    from jobsched.stores.postgres_conn import PgConn, Pool
    from jobsched.stores.postgres_listen import Listener

log = logging.getLogger("jobsched.postgres")

INSTALL_HINT = "pip install 'jobsched[postgres]'"
# The database clock is read again after this long; in between, db_now adds
# the measured offset to the local clock (no round trip per call).
CLOCK_REFRESH_S = 5.0
# How long a starting node waits for an unreachable or restarting database.
START_PATIENCE_S = 5.0

_QSELECT = ", ".join(f"jobs.{c}" for c in SELECT.split(", "))
_INSERT = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) "
    f"VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))}) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING seq"
)
# COPY, not INSERT: a batch of 10,000 jobs goes about three times as fast.
_COPY = f"COPY jobs ({', '.join(COLUMNS)}, touched_ms) FROM STDIN"
_SEQS = "SELECT job_id, seq FROM jobs WHERE job_id = ANY(%s)"
_UPDATE = ", ".join(f"{c} = %s" for c in COLUMNS[1:])
_REPLACE = f"UPDATE jobs SET {_UPDATE}, touched_ms = %s WHERE job_id = %s AND state = %s"
_CLAIM_SQL = (
    "WITH c AS (SELECT seq FROM jobs WHERE state IN ('scheduled', 'retrying') "
    f"AND priority IN {sq.PRIORITIES} AND due_at <= %s AND {{free}} "
    "ORDER BY priority, due_at, seq LIMIT %s FOR UPDATE SKIP LOCKED) "
    "UPDATE jobs SET state = 'running', locked_by = %s, locked_until = %s, touched_ms = %s "
    f"FROM c WHERE jobs.seq = c.seq RETURNING {_QSELECT}"
)
# By whether limits apply: the claim of a store with no restricting queue settings.
_CLAIM = {limits: _CLAIM_SQL.format(free=sq.no_restriction(limits)) for limits in (False, True)}
_INSERT_RUN = (
    "INSERT INTO runs (job_id, started_at, finished_at, outcome, error, node, recorded_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
_FINAL = "('completed', 'dead', 'cancelled')"
_D = sq.Dialect("%s", SELECT, True)
_PRUNE_JOBS = (
    f"WITH old AS (SELECT seq, job_id FROM jobs WHERE state IN {_FINAL} AND touched_ms < %s "
    "ORDER BY touched_ms LIMIT %s), "
    "r AS (DELETE FROM runs WHERE job_id IN (SELECT job_id FROM old) RETURNING 1), "
    "j AS (DELETE FROM jobs WHERE seq IN (SELECT seq FROM old) RETURNING 1) "
    "SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM j)"
)
_PRUNE_RUNS = (
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE recorded_ms < %s "
    "ORDER BY recorded_ms LIMIT %s)"
)
_NODES_SEEN = (
    "SELECT n.node_id, n.last_seen, (SELECT count(*) FROM jobs j "
    "WHERE j.state = 'running' AND j.locked_by = n.node_id) "
    "FROM nodes n WHERE n.last_seen >= %s ORDER BY n.node_id"
)
# Heartbeat rows of nodes gone this long are dropped by the next heartbeat.
NODE_FORGET_MS = 7 * 24 * 3600 * 1000


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise JobschedError(
            f"the PostgreSQL store needs psycopg 3, which is not installed: {INSTALL_HINT}"
        ) from exc


def _row(job: Job) -> tuple[Any, ...]:
    """The job's row for PostgreSQL, whose text cannot hold NUL."""
    if "\x00" in job.task:
        raise Malformed("task", "must not contain NUL characters")
    row = job_to_row(job)
    return (*row[:23], _nul_free(row[23]), *row[24:])  # last_error


def _runner(pg: Any) -> sq.Run:
    """``run(sql, args) -> rows`` on this connection (no rows for a plain write)."""

    def run(sql: str, args: Sequence[Any]) -> list[Any]:
        cur = pg.execute(sql, args)
        return cur.fetchall() if cur.description is not None else []

    return run


def _replacement(
    job: Job, expect_state: JobState, expect_owner: str | None, stamp: int
) -> tuple[str, tuple[Any, ...]]:
    """The guarded UPDATE that writes ``job`` (see ``Store.replace``), and its values."""
    row = job_to_row(job)
    values: tuple[Any, ...] = (*row[1:23], _nul_free(row[23]), *row[24:])
    values = (*values, stamp, job.job_id, expect_state.value)
    if expect_owner is None:
        return _REPLACE + " RETURNING seq", values
    return _REPLACE + " AND locked_by = %s RETURNING seq", (*values, expect_owner)


def _run_row(run: RunRecord, stamp: int) -> tuple[Any, ...]:
    error = _nul_free(run.error)
    return (run.job_id, run.started_at, run.finished_at, run.outcome, error, run.node, stamp)


def _nul_free(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; an error message with one keeps a visible mark.
    return text.replace("\x00", "\\x00") if text is not None and "\x00" in text else text


class PostgresStore(Store, ClusterClock, WakeupListener, Membership):
    def __init__(self, dsn: str) -> None:
        _require_psycopg()
        from jobsched.stores.postgres_conn import Pool
        from jobsched.stores.postgres_listen import Listener

        self._pool: Pool = Pool(dsn)
        self.schema = self._pool.schema
        self._listener: Listener = Listener(self._pool)
        self._offset_ms: int | None = None
        self._offset_at = 0.0
        self._clock_lock = threading.Lock()
        # The concurrency-limited queues as this node's latest claim read them:
        # a run of one of them ending frees a slot other nodes may be waiting on.
        self._capped: frozenset[str] = frozenset()
        try:
            self._start()
        except BaseException:
            self._pool.close()
            raise

    def borrow(self, pg: Any) -> AbstractContextManager[None]:
        """Run this thread's calls on the application's psycopg connection ``pg``,
        inside its transaction, in a savepoint (``postgres_caller.borrowed``)."""
        from jobsched.stores.postgres_caller import borrowed

        return borrowed(self._pool, pg)

    def _start(self) -> None:
        """Apply the migrations; a database that is restarting gets a few seconds
        (nodes and database often start together), then the error stands."""
        give_up = time.monotonic() + START_PATIENCE_S
        warned = False
        while True:
            try:
                self._pool.ensure_schema()
                return
            except Unavailable as exc:
                if time.monotonic() >= give_up:
                    # One plain line for whoever started us: no retry is coming.
                    raise Unavailable(
                        f"PostgreSQL at {self._pool.where} did not answer within "
                        f"{START_PATIENCE_S:g} s ({self._pool.last_error or exc.text})"
                    ) from exc
                if not warned:  # once, not every 0.2 s
                    log.warning(
                        "PostgreSQL not ready at start; waiting up to %g s: %s",
                        START_PATIENCE_S,
                        exc.text,
                    )
                    warned = True
                time.sleep(0.2)

    # -- connections and transactions ---------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        return self._pool.transaction()

    @contextmanager
    def _use(self) -> Iterator[PgConn]:
        with self._pool.use() as pg:
            yield pg

    def close(self) -> None:
        self._listener.close()
        self._pool.close()

    # -- jobs -----------------------------------------------------------------

    def insert(self, job: Job) -> Job:
        if job.unique_key is not None:
            return self._insert_unique(job, job.unique_key)
        with self._use() as pg:
            found = pg.execute(_INSERT, (*_row(job), self.clock())).fetchone()
        if found is None:
            raise JobExists(job.job_id)
        job.seq = found[0]
        self._note(job)
        return job

    def _insert_unique(self, job: Job, key: str) -> Job:
        """Insert a job with a unique_key: the key row and the job, or neither.
        A concurrent insert of the same key waits for ours to commit, then
        finds the key held (the upsert's WHERE, or the jobs_unique index)."""
        from psycopg.errors import UniqueViolation

        try:
            with self.transaction(), self._use() as pg:
                holder = sq.take_key(_runner(pg), _D, job)
                if holder is not None:
                    raise DuplicateKey(holder)
                found = pg.execute(_INSERT, (*_row(job), self.clock())).fetchone()
        except UniqueViolation as exc:
            with self._use() as pg:
                live = sq.live_holder(_runner(pg), _D, key)
            raise DuplicateKey(live or job.job_id) from exc
        if found is None:
            raise JobExists(job.job_id)
        job.seq = found[0]
        self._note(job)
        return job

    def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        from psycopg.errors import UniqueViolation

        if not jobs:
            return []
        stamp = self.clock()
        rows = [(*_row(job), stamp) for job in jobs]
        ids = [job.job_id for job in jobs]
        try:
            # A block of its own (a savepoint inside the caller's): a taken id undoes the rest.
            with self.transaction(), self._use() as pg, pg.cursor() as cur:
                with cur.copy(_COPY) as copy:
                    for row in rows:
                        copy.write_row(row)
                seqs = dict(cur.execute(_SEQS, (ids,)).fetchall())
        except UniqueViolation:
            taken = first_taken(jobs, set(self.get_many(ids)))
            if taken is None:
                raise
            raise JobExists(taken) from None
        for job in jobs:
            job.seq = seqs[job.job_id]
        dues = [j.due_at for j in jobs if j.state in RUNNABLE_STATES and j.due_at is not None]
        if dues:
            self._pool.note_due(min(dues))
        return list(jobs)

    def get(self, job_id: str) -> Job | None:
        with self._use() as pg:
            row = pg.execute(f"SELECT {SELECT} FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
        return None if row is None else job_from_row(row)

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        with self._use() as pg:
            rows = pg.execute(f"SELECT {SELECT} FROM jobs WHERE job_id = ANY(%s)", (job_ids,))
            return {job.job_id: job for job in map(job_from_row, rows.fetchall())}

    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        sql, values = _replacement(job, expect_state, expect_owner, self.clock())
        with self._use() as pg:
            found = pg.execute(sql, values).fetchone()
        return self._replaced(job, expect_state, found)

    def replace_many(self, writes: Sequence[Replacement]) -> list[bool]:
        return self.finish_runs(writes, ())

    def finish_runs(self, writes: Sequence[Replacement], runs: Sequence[RunRecord]) -> list[bool]:
        # One round trip for them all: psycopg's pipeline mode sends every
        # statement, then reads every answer.
        stamp = self.clock()
        updates = [_replacement(job, state, owner, stamp) for job, state, owner in writes]
        inserts = [_run_row(run, stamp) for run in runs]
        with self._use() as pg:
            if len(updates) + len(inserts) == 1:  # one statement: no pipeline needed
                sql, values = updates[0] if updates else (_INSERT_RUN, inserts[0])
                cursors = [pg.execute(sql, values)]
            else:
                with pg.pipeline():
                    cursors = [pg.execute(sql, values) for sql, values in updates]
                    if inserts:
                        pg.cursor().executemany(_INSERT_RUN, inserts)
            found = [cur.fetchone() for cur in cursors[: len(updates)]]
        return [self._replaced(j, s, f) for (j, s, _), f in zip(writes, found, strict=True)]

    def _replaced(self, job: Job, expect_state: JobState, found: Any) -> bool:
        if found is None:
            return False
        job.seq = found[0]
        self._note(job)
        if expect_state is JobState.RUNNING and job.queue in self._capped:
            # A slot is free: wake the nodes sleeping on the full queue now, not
            # at their next look (0: NOTIFY_SQL then wakes whenever a job is due).
            self._pool.note_due(0)
        return True

    def _note(self, job: Job) -> None:
        if job.state in RUNNABLE_STATES:
            self._pool.note_due(job.due_at)

    def claim_due(
        self,
        now: int,
        limit: int,
        owner: str,
        lease_until: int,
        queues: frozenset[str] | None = None,
        limits: bool = True,
    ) -> list[Job]:
        # One transaction: the limited queues' settings rows stay locked until
        # it commits, so two nodes never both count the same free slot.
        with self._pool.joined(), self._use() as pg:
            run = _runner(pg)
            jobs: list[Job] = []
            if queues is None:  # no queue settings restrict it: one statement
                args = (now, limit, owner, lease_until, self.clock())
                jobs = [job_from_row(r) for r in run(_CLAIM[limits], args)]
            rules: list[QueueSettings] = []
            if not jobs:
                lease = (owner, lease_until, self.clock())
                jobs, rules = sq.claim_restricted(
                    run, _D, job_from_row, now, limit, lease, queues, limits
                )
            if limits:
                self._capped = frozenset(q.name for q in rules if q.concurrency is not None)
        # RETURNING gives rows in no promised order; the claim order is (priority, due_at, seq).
        jobs.sort(key=lambda j: (j.priority, j.due_at or 0, j.seq))
        return jobs

    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        with self.transaction(), self._use() as pg:
            return sq.configure(_runner(pg), _D, name, change)

    def queue_report(self) -> list[QueueReport]:
        with self._use() as pg:
            return sq.report(_runner(pg))

    def next_due(self) -> int | None:
        with self._use() as pg:
            row = pg.execute(
                "SELECT min(due_at) FROM jobs WHERE state IN ('scheduled', 'retrying')"
            ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def list_jobs(
        self,
        state: JobState | None,
        task: str | None,
        after: str | None,
        limit: int,
        queue: str | None = None,
    ) -> list[Job]:
        with self._use() as pg:
            return list_query(
                lambda sql, args: pg.execute(sql, args).fetchall(),
                "%s",
                state,
                task,
                after,
                limit,
                queue,
            )

    def counts(self) -> dict[JobState, int]:
        with self._use() as pg:
            rows = pg.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        return {JobState(s): n for s, n in rows}

    def extend_leases(self, owner: str, until: int) -> int:
        with self._use() as pg:
            cur = pg.execute(
                "UPDATE jobs SET locked_until = %s, touched_ms = %s "
                "WHERE state = 'running' AND locked_by = %s",
                (until, self.clock(), owner),
            )
        return cur.rowcount

    def expired_leases(self, now: int, limit: int) -> list[Job]:
        with self._use() as pg:
            rows = pg.execute(
                f"SELECT {SELECT} FROM jobs WHERE state = 'running' AND locked_until < %s "
                "ORDER BY locked_until, seq LIMIT %s",
                (now, limit),
            ).fetchall()
        return [job_from_row(r) for r in rows]

    # -- run history --------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        self.finish_runs((), (run,))

    def record_runs(self, runs: Sequence[RunRecord]) -> None:
        self.finish_runs((), runs)

    def recent_runs(self, job_id: str, limit: int = RECENT_RUNS) -> list[RunRecord]:
        with self._use() as pg:
            rows = pg.execute(
                "SELECT job_id, started_at, finished_at, outcome, error, node FROM runs "
                "WHERE job_id = %s ORDER BY id DESC LIMIT %s",
                (job_id, limit),
            ).fetchall()
        return [RunRecord(*r) for r in rows]

    def prune(self, finished_before: int, batch: int) -> int:
        with self.transaction(), self._use() as pg:
            row = pg.execute(_PRUNE_JOBS, (finished_before, batch)).fetchone()
            jobs = int(row[0]) if row else 0
            runs = pg.execute(_PRUNE_RUNS, (finished_before, batch)).rowcount
            keys = sq.prune_keys(_runner(pg), _D, finished_before, batch)
        return jobs + runs + keys

    # -- cluster: clock, wake-ups, membership -------------------------------

    def db_now(self) -> int:
        """The database's clock (``clock_timestamp()``) in epoch ms: the cluster's
        clock, so that nodes with skewed clocks agree on what is due.

        Measured with a round trip every few seconds (the offset from the local
        clock, taken at the round trip's midpoint); in between, and while the
        database is unreachable, the last offset is applied to the local clock.
        Never raises: before any measurement it is the local clock.
        """
        mono = time.monotonic()
        with self._clock_lock:
            if self._offset_ms is None or mono - self._offset_at >= CLOCK_REFRESH_S:
                self._offset_at = mono
                self._measure_offset()
            offset = self._offset_ms or 0
        return int(time.time() * 1000) + offset

    def _measure_offset(self) -> None:
        try:
            before = time.time()
            with self._use() as pg:
                row = pg.execute(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
                ).fetchone()
            after = time.time()
        except Unavailable as exc:
            log.warning("cannot read the database clock, using the last offset: %s", exc.text)
            return
        assert row is not None
        self._offset_ms = int(row[0]) - int((before + after) * 500)

    def wait_for_wakeup(self, timeout_s: float) -> bool:
        """Block until a write (on any node) makes a job due sooner than every
        other, ``wake()`` is called, or ``timeout_s`` passes; True if woken.
        Uses a dedicated LISTEN connection, opened at the first call: call
        ``wait_for_wakeup(0)`` once before the first ``next_due`` read so that
        no wake-up is missed. If the database is unreachable it just waits
        (polling stays the fallback). Never raises."""
        return self._listener.wait(timeout_s)

    def wake(self) -> None:
        """End a ``wait_for_wakeup`` in another thread now (e.g. on shutdown)."""
        self._listener.wake()

    def heartbeat(self, owner: str, now: int) -> None:
        """Record that ``owner`` is alive at ``now`` (cluster clock); rows of
        nodes silent for NODE_FORGET_MS go."""
        with self._use() as pg:
            pg.execute(
                "WITH gone AS (DELETE FROM nodes WHERE last_seen < %s AND node_id <> %s) "
                "INSERT INTO nodes (node_id, first_seen, last_seen) VALUES (%s, %s, %s) "
                "ON CONFLICT (node_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
                (now - NODE_FORGET_MS, owner, owner, now, now),
            )

    def nodes_seen(self, since: int) -> list[tuple[str, int, int]]:
        """Nodes whose last heartbeat is at or after ``since``, by id:
        ``(node_id, last_seen, jobs_held)``, jobs_held = running jobs it leases."""
        with self._use() as pg:
            rows = pg.execute(_NODES_SEEN, (since,)).fetchall()
        return [(str(n), int(t), int(k)) for n, t, k in rows]
