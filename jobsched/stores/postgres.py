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

Its SQL text is ``postgres_sql``. Beyond the Store interface it has every
optional capability of ``base`` (the ``postgres_cluster`` mixin), for the
real-time dispatcher and the service:

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
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

from jobsched.errors import JobExists, JobschedError, Unavailable
from jobsched.jobs import RUNNABLE_STATES, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.stores import postgres_sql as q
from jobsched.stores import sql_queues as sq
from jobsched.stores.base import (
    RECENT_RUNS,
    DuplicateKey,
    Replacement,
    RunRecord,
    Store,
    first_taken,
)
from jobsched.stores.postgres_claim import Both, Bound, Memory, claim_limited
from jobsched.stores.postgres_cluster import PgCluster
from jobsched.stores.sqlite_schema import SELECT, job_from_row, list_query

if TYPE_CHECKING:
    from jobsched.stores.postgres_conn import PgConn, Pool
    from jobsched.stores.postgres_listen import Listener

log = logging.getLogger("jobsched.postgres")

INSTALL_HINT = "pip install 'jobsched[postgres]'"
# How long a starting node waits for an unreachable or restarting database.
START_PATIENCE_S = 5.0


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise JobschedError(
            f"the PostgreSQL store needs psycopg 3, which is not installed: {INSTALL_HINT}"
        ) from exc


def _both(pg: Any) -> Both:
    """Two reads on connection ``pg`` sent together: one round trip."""

    def both(first: Bound, second: Bound) -> tuple[list[Any], list[Any]]:
        with pg.pipeline():
            a = pg.execute(*first)
            b = pg.execute(*second)
        return a.fetchall(), b.fetchall()

    return both


class PostgresStore(Store, PgCluster):
    def __init__(self, dsn: str) -> None:
        _require_psycopg()
        from jobsched.stores.postgres_conn import Pool
        from jobsched.stores.postgres_listen import Listener

        self._pool: Pool = Pool(dsn)
        self.schema = self._pool.schema
        self._listener: Listener = Listener(self._pool)
        self._init_cluster()
        # The concurrency-limited queues as this node's latest claim read them:
        # a run of one of them ending frees a slot other nodes may be waiting on.
        self._capped: frozenset[str] = frozenset()
        # Whether the last settings read found claims restricted, by ``limits``.
        self._restricted = {False: False, True: False}
        # By (limits, --queues): the settings this node's last limited claim
        # read, and whether it took nothing (postgres_claim.Memory).
        self._seen: dict[tuple[bool, frozenset[str] | None], tuple[list[QueueSettings], bool]] = {}
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
            found = pg.execute(q.INSERT, (*q.row(job), self.clock())).fetchone()
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
                holder = sq.take_key(q.runner(pg), q.D, job)
                if holder is not None:
                    raise DuplicateKey(holder)
                found = pg.execute(q.INSERT, (*q.row(job), self.clock())).fetchone()
        except UniqueViolation as exc:
            with self._use() as pg:
                live = sq.live_holder(q.runner(pg), q.D, key)
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
        rows = [(*q.row(job), stamp) for job in jobs]
        ids = [job.job_id for job in jobs]
        try:
            # A block of its own (a savepoint inside the caller's): a taken id undoes the rest.
            with self.transaction(), self._use() as pg, pg.cursor() as cur:
                with cur.copy(q.COPY) as copy:
                    for row in rows:
                        copy.write_row(row)
                seqs = dict(cur.execute(q.SEQS, (ids,)).fetchall())
        except UniqueViolation:
            taken = first_taken(jobs, set(self.get_many(ids)))
            if taken is None:
                raise
            raise JobExists(taken) from None
        for job in jobs:
            job.seq = seqs[job.job_id]
        dues = [
            (j.due_at, j.queue) for j in jobs if j.state in RUNNABLE_STATES and j.due_at is not None
        ]
        if dues:
            self._pool.note_due(*min(dues))
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
        sql, values = q.replacement(job, expect_state, expect_owner, self.clock())
        if job.unique_key is not None:
            return self._replace_keyed(job, expect_state, sql, values, job.unique_key)
        with self._use() as pg:
            found = pg.execute(sql, values).fetchone()
        return self._replaced(job, expect_state, found)

    def _replace_keyed(
        self, job: Job, expect_state: JobState, sql: str, values: Any, key: str
    ) -> bool:
        """``replace`` in a savepoint (sent with the statement: no round trip of
        its own): a final job made live again (retry_job) while another holds
        its key breaks jobs_unique, and the caller's block must go on."""
        from psycopg.errors import UniqueViolation

        try:
            with self.transaction(), self._use() as pg:
                found = pg.execute(sql, values).fetchone()
        except UniqueViolation as exc:
            with self._use() as pg:
                live = sq.live_holder(q.runner(pg), q.D, key)
            raise DuplicateKey(live or "") from exc
        return self._replaced(job, expect_state, found)

    def finish_runs(self, writes: Sequence[Replacement], runs: Sequence[RunRecord]) -> list[bool]:
        # One round trip for them all: psycopg's pipeline mode sends every
        # statement, then reads every answer.
        stamp = self.clock()
        updates = [q.replacement(job, state, owner, stamp) for job, state, owner in writes]
        inserts = [q.run_row(run, stamp) for run in runs]
        with self._use() as pg:
            if len(updates) + len(inserts) == 1:  # one statement: no pipeline needed
                sql, values = updates[0] if updates else (q.INSERT_RUN, inserts[0])
                cursors = [pg.execute(sql, values)]
            else:
                with pg.pipeline():
                    cursors = [pg.execute(sql, values) for sql, values in updates]
                    if inserts:
                        pg.cursor().executemany(q.INSERT_RUN, inserts)
            found = [cur.fetchone() for cur in cursors[: len(updates)]]
        return [self._replaced(j, s, f) for (j, s, _), f in zip(writes, found, strict=True)]

    def _replaced(self, job: Job, expect_state: JobState, found: Any) -> bool:
        if found is None:
            return False
        job.seq = found[0]
        self._note(job)
        if expect_state is JobState.RUNNING and job.queue in self._capped:
            # A slot is free: wake the nodes sleeping on the full queue now, not
            # at their next look (unless this transaction takes it again).
            self._pool.note_freed(job.queue)
        return True

    def _note(self, job: Job) -> None:
        if job.state in RUNNABLE_STATES:
            self._pool.note_due(job.due_at, job.queue)

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
            run = q.runner(pg)
            jobs: list[Job] = []
            plain = queues is None and not self._restricted[limits]
            if plain:  # no queue setting restricts it: one statement
                args = (now, limit, limit, owner, lease_until, self.clock())
                jobs = [job_from_row(r) for r in run(q.CLAIM[limits], args)]
            rules: list[QueueSettings] = []
            if not jobs:
                lease = (owner, lease_until, self.clock())
                seen, nothing = self._seen.get((limits, queues), (None, False))
                memory = Memory(_both(pg), self._pool.transaction, seen, nothing)
                jobs, rules = claim_limited(
                    run, q.D, job_from_row, now, limit, lease, queues, limits, plain, memory
                )
                self._restricted[limits] = sq.restricts(rules, limits)
                self._seen[(limits, queues)] = (rules, not jobs and bool(rules))
            if limits:
                self._capped = frozenset(r.name for r in rules if r.concurrency is not None)
        # RETURNING gives rows in no promised order; the claim order is (priority, due_at, seq).
        jobs.sort(key=lambda j: (j.priority, j.due_at or 0, j.seq))
        return jobs

    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        with self.transaction(), self._use() as pg:
            return sq.configure(q.runner(pg), q.D, name, change)

    def queue_report(self) -> list[QueueReport]:
        with self._use() as pg:
            return sq.report(q.runner(pg))

    def queue_settings(self) -> list[QueueSettings]:
        with self._use() as pg:
            return sq.all_settings(q.runner(pg))

    def next_due(self, after: int | None = None) -> int | None:
        with self._use() as pg:
            if after is None:
                row = pg.execute(q.NEXT_DUE).fetchone()
            else:
                row = pg.execute(q.NEXT_DUE_AFTER, (after,)).fetchone()
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
            row = pg.execute(q.PRUNE_JOBS, (finished_before, batch)).fetchone()
            jobs = int(row[0]) if row else 0
            runs = pg.execute(q.PRUNE_RUNS, (finished_before, batch)).rowcount
            keys = sq.prune_keys(q.runner(pg), q.D, finished_before, batch)
        return jobs + runs + keys
