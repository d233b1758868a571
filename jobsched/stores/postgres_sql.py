"""The SQL text of the PostgreSQL store, and the rows it binds.

Statements are built once, at import, from the column list the SQLite store
shares (``sqlite_schema``); the functions turn jobs and run records into the
values those statements take. PostgreSQL's text cannot hold NUL, so the two
free-text fields a user's handler fills (``last_error``, a run's ``error``)
are stored with a visible mark instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobsched.errors import Malformed
from jobsched.jobs import MAX_PRIORITY, Job, JobState
from jobsched.stores import sql_queues as sq
from jobsched.stores.base import RunRecord
from jobsched.stores.sqlite_schema import COLUMNS, RUN_TIME, SELECT, job_to_row, run_time_values

QSELECT = ", ".join(f"jobs.{c}" for c in SELECT.split(", "))
INSERT = (
    f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) "
    f"VALUES ({', '.join(['%s'] * (len(COLUMNS) + 1))}) "
    "ON CONFLICT (job_id) DO NOTHING RETURNING seq"
)
# COPY, not INSERT: a batch of 10,000 jobs goes about three times as fast.
COPY = f"COPY jobs ({', '.join(COLUMNS)}, touched_ms) FROM STDIN"
SEQS = "SELECT job_id, seq FROM jobs WHERE job_id = ANY(%s)"
# Store.replace writes the run-time columns only (sqlite_schema.RUN_TIME).
REPLACE = (
    f"UPDATE jobs SET {', '.join(f'{c} = %s' for c in RUN_TIME)}, touched_ms = %s "
    "WHERE job_id = %s AND state = %s"
)


# Every priority as rows ``p``: a query LATERAL-joined to it reads one range
# of a due index per priority, each already in due order.
_PRIORITIES = f"unnest(ARRAY[{', '.join(str(p) for p in range(MAX_PRIORITY + 1))}]) p"


def due_rows(where: str, limit: str) -> str:
    """A SELECT of (priority, due_at, seq) of up to ``limit`` runnable jobs due
    at or before its first argument and matching ``where``, in claim order,
    locked (SKIP LOCKED). One index range per priority, each already in
    (due_at, seq) order: the plan cannot depend on the table's statistics. Left
    to the planner, ``priority IN (...) ORDER BY priority, due_at, seq`` on a
    table not yet analysed (autovacuum off, or a burst of jobs before it runs)
    read every due job and sorted them: 5 ms a claim at 10,000 due, against
    0.25 here. Arguments: the time, ``where``'s, ``limit``'s twice."""
    return (
        f"SELECT x.priority, x.due_at, x.seq FROM {_PRIORITIES}, "
        "LATERAL (SELECT priority, due_at, seq FROM jobs WHERE state IN ('scheduled', 'retrying') "
        f"AND priority = p AND due_at <= %s{where} ORDER BY due_at, seq LIMIT {limit} "
        f"FOR UPDATE SKIP LOCKED) x ORDER BY 1, 2, 3 LIMIT {limit}"
    )


# The (queue, priority) pairs that have runnable jobs, in order, one descent of
# jobs_queue_due each (a loose index scan): a recursive CTE for a claim's WITH.
# A claim that must leave some queues' jobs alone (paused, or full) reads the
# other queues' candidates per pair from it: filtering those queues out of a
# walk of the due index instead read every due job of theirs, on every claim
# (26 ms a claim behind a paused or full queue holding 100,000 due jobs).
PAIRS = (
    "pairs(queue, priority) AS ((SELECT queue, priority FROM jobs "
    "WHERE state IN ('scheduled', 'retrying') ORDER BY queue, priority LIMIT 1) "
    "UNION ALL SELECT n.queue, n.priority FROM pairs, LATERAL (SELECT queue, priority "
    "FROM jobs WHERE state IN ('scheduled', 'retrying') "
    "AND (queue, priority) > (pairs.queue, pairs.priority) ORDER BY queue, priority LIMIT 1) n)"
)


def other_rows(skip: int, limit: str, lock: bool = True) -> str:
    """``due_rows`` over every queue but ``skip`` named ones, read per
    (queue, priority) pair of ``PAIRS`` (which the statement must define).
    Arguments: the time, ``limit``'s, the names skipped, ``limit``'s again."""
    where = f" WHERE pairs.queue NOT IN ({', '.join(['%s'] * skip)})" if skip else ""
    return (
        "SELECT x.priority, x.due_at, x.seq FROM pairs, LATERAL (SELECT priority, due_at, seq "
        "FROM jobs WHERE state IN ('scheduled', 'retrying') "
        f"AND {_pair_range('pairs.queue', 'pairs.priority')} "
        f"ORDER BY queue, priority, due_at, seq LIMIT {limit}{_locked(lock)}) x{where} "
        f"ORDER BY 1, 2, 3 LIMIT {limit}"
    )


def queue_rows(limit: str, lock: bool = True) -> str:
    """``due_rows`` of one queue. Arguments: the queue, the time, ``limit``'s twice.
    ``lock``: the rows are locked (SKIP LOCKED), as a claim needs; else only read."""
    return (
        f"SELECT x.priority, x.due_at, x.seq FROM {_PRIORITIES}, (SELECT %s::text AS name) q, "
        "LATERAL (SELECT priority, due_at, seq FROM jobs WHERE state IN ('scheduled', 'retrying') "
        f"AND {_pair_range('q.name', 'p')} ORDER BY queue, priority, due_at, seq LIMIT {limit}"
        f"{_locked(lock)}) x ORDER BY 1, 2, 3 LIMIT {limit}"
    )


def _locked(lock: bool) -> str:
    return " FOR UPDATE SKIP LOCKED" if lock else ""


def _pair_range(queue: str, priority: str) -> str:
    """The runnable jobs of one (queue, priority) due at or before the time
    (its one argument), as row comparisons: bounds only jobs_queue_due (queue,
    priority, due_at, seq) can serve. Written ``queue = ... AND priority = ...``,
    a planner whose statistics say one queue holds most jobs may read them
    through jobs_due, filtering by queue, and walk another queue's backlog."""
    return (
        f"(queue, priority) >= ({queue}, {priority}) "
        f"AND (queue, priority, due_at) <= ({queue}, {priority}, %s)"
    )


CLAIM_SQL = (
    "WITH c AS ({rows}) "
    "UPDATE jobs SET state = 'running', locked_by = %s, locked_until = %s, touched_ms = %s "
    f"FROM c WHERE jobs.seq = c.seq RETURNING {QSELECT}"
)
# By whether limits apply: the claim of a store with no restricting queue settings.
# Arguments: now, the limit twice, the lease (owner, until, stamp).
CLAIM = {
    limits: CLAIM_SQL.format(rows=due_rows(f" AND {sq.no_restriction(limits)}", "%s"))
    for limits in (False, True)
}
INSERT_RUN = (
    "INSERT INTO runs (job_id, started_at, finished_at, outcome, error, node, recorded_ms) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
FINAL = "('completed', 'dead', 'cancelled')"
D = sq.Dialect("%s", SELECT, True)


# The earliest due time of the runnable jobs that match a condition. The due
# indexes lead with priority (claims take by priority first), so a plain
# min(due_at) read every runnable job (a scan: 35 ms at 200,000 jobs, on every
# wake-up and every commit that schedules); one probe per priority reads ten
# index entries (0.3 ms).
def _earliest(where: str) -> str:
    return (
        f"(SELECT min(d) FROM {_PRIORITIES}, LATERAL "
        "(SELECT due_at AS d FROM jobs WHERE state IN ('scheduled', 'retrying') "
        f"AND priority = p AND due_at IS NOT NULL{where} ORDER BY due_at LIMIT 1) x)"
    )


MIN_DUE = _earliest("")
MIN_DUE_AFTER = _earliest(" AND due_at > %s")
NEXT_DUE = f"SELECT {MIN_DUE}"
NEXT_DUE_AFTER = f"SELECT {MIN_DUE_AFTER}"
# statement_timestamp(), not clock_timestamp(): a stable function can bound an
# index scan; a volatile one is a filter, and the read of the earliest future
# job walked every job already due (O(backlog) per NOTIFY). The statement runs
# just before its COMMIT, so the two clocks differ by its own run time.
_DB_NOW = "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
# Sent before a commit that made a job runnable at due (in queue), when a
# sleeping node may not know of a job that early: it is the earliest of its
# queue (a queue with jobs already due, full or blocked or busy, says nothing
# more for each new one), and no job due in the future is due sooner (a
# sleeping node wakes at the earliest of those; jobs already due, blocked in
# another queue, do not keep it asleep: docs/queues.md).
_DUE_NEWS = (
    f"%s <= {_earliest(' AND queue = %s')} "
    f"AND %s <= COALESCE({_earliest(f' AND due_at > {_DB_NOW}')}, %s)"
)
NOTIFY_SQL = f"SELECT pg_notify(%s, %s) WHERE {_DUE_NEWS}"


def _due_news_args(due: int, queue: str) -> tuple[Any, ...]:
    return (due, queue, due, due)


def notify_args(channel: str, due: int, queue: str) -> tuple[Any, ...]:
    return (channel, str(due), *_due_news_args(due, queue))


# A queue with a concurrency limit whose slot this transaction freed, with a
# slot still free when it commits and jobs to run: its sleeping nodes may now
# claim. A node that frees slots and takes them again in the same transaction
# (docs/queues.md) leaves the queue full and wakes no one.
_SLOT_FREE = (
    "EXISTS (SELECT 1 FROM queues q WHERE q.name = ANY(%s) AND NOT q.paused "
    "AND q.concurrency > (SELECT count(*) FROM jobs WHERE state = 'running' AND queue = q.name) "
    "AND EXISTS (SELECT 1 FROM jobs WHERE state IN ('scheduled', 'retrying') "
    "AND queue = q.name AND due_at IS NOT NULL))"
)
_NOTIFY_FREED = f"SELECT pg_notify(%s, '0') WHERE {_SLOT_FREE}"
_NOTIFY_EITHER = f"SELECT pg_notify(%s, '0') WHERE {_SLOT_FREE} OR ({_DUE_NEWS})"


def notify(
    channel: str, due: int | None, queue: str, freed: frozenset[str]
) -> tuple[str, tuple[Any, ...]] | None:
    """The NOTIFY sent before a commit that made a job of ``queue`` runnable
    at ``due`` (None: none) and freed slots of the capped queues ``freed``;
    None when there is nothing to tell."""
    if not freed:
        return None if due is None else (NOTIFY_SQL, notify_args(channel, due, queue))
    names = sorted(freed)
    if due is None:
        return _NOTIFY_FREED, (channel, names)
    return _NOTIFY_EITHER, (channel, names, *_due_news_args(due, queue))


PRUNE_JOBS = (
    f"WITH old AS (SELECT seq, job_id FROM jobs WHERE state IN {FINAL} AND touched_ms < %s "
    "ORDER BY touched_ms LIMIT %s), "
    "r AS (DELETE FROM runs WHERE job_id IN (SELECT job_id FROM old) RETURNING 1), "
    "j AS (DELETE FROM jobs WHERE seq IN (SELECT seq FROM old) RETURNING 1) "
    "SELECT (SELECT count(*) FROM r) + (SELECT count(*) FROM j)"
)
PRUNE_RUNS = (
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE recorded_ms < %s "
    "ORDER BY recorded_ms LIMIT %s)"
)


def row(job: Job) -> tuple[Any, ...]:
    """The job's row for PostgreSQL, whose text cannot hold NUL."""
    if "\x00" in job.task:
        raise Malformed("task", "must not contain NUL characters")
    row = job_to_row(job)
    return (*row[:23], nul_free(row[23]), *row[24:])  # last_error


def runner(pg: Any) -> sq.Run:
    """``run(sql, args) -> rows`` on this connection (no rows for a plain write)."""

    def run(sql: str, args: Sequence[Any]) -> list[Any]:
        cur = pg.execute(sql, args)
        return cur.fetchall() if cur.description is not None else []

    return run


def replacement(
    job: Job, expect_state: JobState, expect_owner: str | None, stamp: int
) -> tuple[str, tuple[Any, ...]]:
    """The guarded UPDATE that writes ``job`` (see ``Store.replace``), and its values."""
    row = run_time_values(job)
    values: tuple[Any, ...] = (*row[:6], nul_free(row[6]), *row[7:])  # last_error
    values = (*values, stamp, job.job_id, expect_state.value)
    if expect_owner is None:
        return REPLACE + " RETURNING seq", values
    return REPLACE + " AND locked_by = %s RETURNING seq", (*values, expect_owner)


def run_row(run: RunRecord, stamp: int) -> tuple[Any, ...]:
    error = nul_free(run.error)
    return (run.job_id, run.started_at, run.finished_at, run.outcome, error, run.node, stamp)


def nul_free(text: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL; an error message with one keeps a visible mark.
    return text.replace("\x00", "\\x00") if text is not None and "\x00" in text else text
