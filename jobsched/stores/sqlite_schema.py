"""How the SQLite store lays jobs out in rows, and how a file gets its schema.

Rows: ``COLUMNS`` is the column order of the jobs table as the store reads and
writes it; ``job_to_row`` / ``job_from_row`` convert exactly (every field of
Job round-trips). Schema: a new file is created from ``schema.sql``, an older
one brought up to date by its pending migrations (see ``migrate``), in one
transaction; a file written by a newer jobsched is refused.
"""

from __future__ import annotations

import os
import sqlite3
from functools import lru_cache
from operator import attrgetter
from typing import Any

from jobsched.errors import JobNotFound, JobschedError
from jobsched.jobs import (
    DEFAULT_OPTIONS,
    DEFAULT_RETRY,
    ONCE,
    CronSchedule,
    IntervalSchedule,
    Job,
    JobOptions,
    JobState,
    RetryPolicy,
    Schedule,
)
from jobsched.stores import migrate
from jobsched.timefmt import now_ms

HEADER = b"SQLite format 3\x00"

# -- rows <-> jobs --------------------------------------------------------------

COLUMNS = (
    "job_id", "task", "payload", "state", "due_at", "created_at", "updated_at",
    "sched_kind", "cron", "timezone", "interval_ms", "anchor_ms",
    "max_attempts", "base_ms", "max_backoff_ms", "jitter",
    "timeout_ms", "overlap", "misfire", "catchup_window_ms",
    "attempts", "runs", "last_run_at", "last_error", "paused_from", "first_due",
    "spec_key", "skipped", "locked_by", "locked_until",
    "queue", "priority", "unique_key", "unique_for_ms",
)  # fmt: skip
SELECT = "seq, " + ", ".join(COLUMNS)
_STATES = {s.value: s for s in JobState}


def job_to_row(job: Job) -> tuple[Any, ...]:
    """The job as the values of COLUMNS, in order."""
    s, r, o = job.schedule, job.retry, job.options
    cron = tz = interval = anchor = None
    if isinstance(s, CronSchedule):
        cron, tz = s.expr.text, s.expr.tz
    elif isinstance(s, IntervalSchedule):
        interval, anchor = s.interval_ms, s.anchor_ms
    return (
        job.job_id, job.task, job.payload_json, job.state.value, job.due_at,
        job.created_at, job.updated_at, s.kind, cron, tz, interval, anchor,
        r.max_attempts, r.base_ms, r.max_backoff_ms, int(r.jitter),
        o.timeout_ms, o.overlap, o.misfire, o.catchup_window_ms,
        job.attempts, job.runs, job.last_run_at, job.last_error,
        None if job.paused_from is None else job.paused_from.value, job.first_due,
        job.spec_key, job.skipped, job.locked_by, job.locked_until,
        job.queue, job.priority, job.unique_key, job.unique_for_ms,
    )  # fmt: skip


# -- the narrow row of a fresh job ----------------------------------------------
# A job as the engine schedules it (one-time, default policies, never run, no
# unique key) differs from every other such job only in FRESH_COLUMNS: its
# other columns hold FRESH_FIXED, which is what job_to_row itself gives the
# fresh TEMPLATE. insert_many binds FRESH_COLUMNS only and writes FRESH_FIXED
# as literals (sqlite_sql.fresh_insert): a quarter of the parameters.

FRESH_COLUMNS = (
    "job_id", "task", "payload", "due_at", "created_at", "updated_at",
    "first_due", "spec_key", "queue", "priority",
)  # fmt: skip
#: A job's FRESH_COLUMNS values, in order (the Job fields job_to_row writes there).
fresh_row = attrgetter(
    "job_id", "task", "payload_json", "due_at", "created_at", "updated_at",
    "first_due", "spec_key", "queue", "priority",
)  # fmt: skip
#: Every other Job field job_to_row reads (all but seq): a job whose shape is
#: FRESH_SHAPE has the row FRESH_FIXED outside FRESH_COLUMNS.
fresh_shape = attrgetter(
    "state", "schedule", "retry", "options", "attempts", "runs", "last_run_at",
    "last_error", "paused_from", "skipped", "locked_by", "locked_until",
    "unique_key", "unique_for_ms",
)  # fmt: skip
TEMPLATE = Job(
    job_id="", task="", payload_json="", schedule=ONCE, state=JobState.SCHEDULED,
    due_at=None, created_at=0, updated_at=0,
)  # fmt: skip
FRESH_SHAPE: tuple[Any, ...] = fresh_shape(TEMPLATE)
FRESH_FIXED: dict[str, Any] = {
    column: value
    for column, value in zip(COLUMNS, job_to_row(TEMPLATE), strict=True)
    if column not in FRESH_COLUMNS
}


# The columns a job's life changes after its insert: what ``Store.replace``
# writes. The rest (task, payload, schedule, policies, queue, priority,
# unique key, ...) are fixed at insert; an UPDATE that leaves them out also
# leaves alone the indexes built on them alone (task, queue, job_id).
RUN_TIME = (
    "state", "due_at", "updated_at", "attempts", "runs", "last_run_at", "last_error",
    "paused_from", "skipped", "locked_by", "locked_until",
)  # fmt: skip


def run_time_values(job: Job) -> tuple[Any, ...]:
    """The job's RUN_TIME values, in order."""
    return (
        job.state.value, job.due_at, job.updated_at, job.attempts, job.runs, job.last_run_at,
        job.last_error, None if job.paused_from is None else job.paused_from.value,
        job.skipped, job.locked_by, job.locked_until,
    )  # fmt: skip


def list_query(
    run: Any,
    mark: str,
    state: JobState | None,
    task: str | None,
    after: str | None,
    limit: int,
    queue: str | None = None,
) -> list[Job]:
    """list_jobs for a SQL store: ``run(sql, args)`` returns rows; ``mark`` is the
    driver's placeholder (``?`` for sqlite3, ``%s`` for psycopg)."""
    seq = 0
    if after is not None:
        found = run(f"SELECT seq FROM jobs WHERE job_id = {mark}", (after,))
        if not found:
            raise JobNotFound(after)
        seq = found[0][0]
    args = (seq, *(() if state is None else (state.value,)), *(() if task is None else (task,)))
    args = (*args, *(() if queue is None else (queue,)))
    sql = list_sql(mark, state is not None, task is not None, queue is not None)
    rows = run(sql, (*args, limit))
    return [job_from_row(r) for r in rows]


@lru_cache(maxsize=16)
def list_sql(mark: str, by_state: bool, by_task: bool, by_queue: bool = False) -> str:
    """The listing statement for one filter combination: two placeholders times
    eight combinations, built once each (results are never cached: they would
    keep every listed job alive)."""
    sql = f"SELECT {SELECT} FROM jobs WHERE seq > {mark}"
    if by_state:
        sql += f" AND state = {mark}"
    if by_task:
        sql += f" AND task = {mark}"
    if by_queue:
        sql += f" AND queue = {mark}"
    return f"{sql} ORDER BY seq LIMIT {mark}"


def _cron(text: str, tz: str) -> CronSchedule:
    from jobsched.cron import CronExpr  # the cron engine loads only when a cron job does

    return CronSchedule(CronExpr.parse(text, tz))


def _schedule(
    kind: str, cron: str | None, tz: str | None, every: int | None, anchor: int | None
) -> Schedule:
    if kind == "cron" and cron is not None and tz is not None:
        return _cron(cron, tz)
    if kind == "interval" and every is not None and anchor is not None:
        return IntervalSchedule(every, anchor)
    if kind == "once":
        return ONCE
    raise JobschedError(f"stored job has a damaged schedule: {kind!r}")


def job_from_row(row: Any) -> Job:
    """A Job from a row of SELECT (seq first, then COLUMNS)."""
    (seq, job_id, task, payload, state, due_at, created_at, updated_at,
     kind, cron, tz, every, anchor, max_attempts, base_ms, max_backoff_ms, jitter,
     timeout_ms, overlap, misfire, catchup, attempts, runs, last_run_at, last_error,
     paused_from, first_due, spec_key, skipped, locked_by, locked_until,
     queue, priority, unique_key, unique_for_ms) = row  # fmt: skip
    retry = RetryPolicy(max_attempts, base_ms, max_backoff_ms, bool(jitter))
    options = JobOptions(timeout_ms, overlap, misfire, catchup)
    return Job(
        job_id=job_id, task=task, payload_json=payload, state=_STATES[state],
        schedule=_schedule(kind, cron, tz, every, anchor), due_at=due_at,
        created_at=created_at, updated_at=updated_at,
        # Share the default values, as jobs built by the engine do.
        retry=DEFAULT_RETRY if retry == DEFAULT_RETRY else retry,
        options=DEFAULT_OPTIONS if options == DEFAULT_OPTIONS else options,
        attempts=attempts, runs=runs, last_run_at=last_run_at, last_error=last_error,
        paused_from=None if paused_from is None else _STATES[paused_from],
        first_due=first_due, spec_key=spec_key, skipped=skipped, seq=seq,
        locked_by=locked_by, locked_until=locked_until,
        queue=queue, priority=priority, unique_key=unique_key, unique_for_ms=unique_for_ms,
    )  # fmt: skip


def split_statements(script: str) -> list[str]:
    """Split a script into statements (executescript would COMMIT our transaction)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip() and not all(
        ln.strip().startswith("--") or not ln.strip() for ln in current.splitlines()
    ):
        raise JobschedError(f"unterminated SQL statement: {current.strip()[:80]!r}")
    return out


def check_header(path: str) -> None:
    """Refuse a file that is not SQLite before SQLite touches it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise JobschedError(f"cannot read {path}: {exc}") from exc
    if head and head != HEADER:
        raise JobschedError(
            f"{path} is not a SQLite database (wrong file header); refusing to use it: "
            "point --db at a new file or at a jobsched database"
        )


def ensure_schema(db: sqlite3.Connection, where: str, fresh_from_schema: bool = True) -> None:
    """Bring the database to the current schema: a new one from schema.sql in one
    step, an older one by its pending migrations, all in one transaction."""
    known = migrate.migrations("sqlite")
    if _applied(db) is not None and not migrate.pending(known, _applied(db) or (), where):
        return  # the common case: nothing to do, and no write lock taken
    db.execute("BEGIN IMMEDIATE")
    try:
        applied = _applied(db)
        if applied is None and _has_tables(db):
            raise JobschedError(f"{where} holds tables but no jobsched schema; refusing it")
        todo = migrate.pending(known, applied or (), where)
        db.execute(migrate.MIGRATIONS_TABLE)
        if applied is None and fresh_from_schema:
            _run_script(db, migrate.current_schema("sqlite"))
        else:
            for m in todo:
                _run_script(db, m.sql)
        db.executemany(
            "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
            [(m.version, m.name, now_ms()) for m in todo],
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _applied(db: sqlite3.Connection) -> list[int] | None:
    """Applied migration versions, or None when the table does not exist."""
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if exists is None:
        return None
    return [v for (v,) in db.execute("SELECT version FROM schema_migrations")]


def _has_tables(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is not None


def _run_script(db: sqlite3.Connection, script: str) -> None:
    for statement in split_statements(script):
        db.execute(statement)


def probe(db: sqlite3.Connection) -> None:
    """Walk into the table and its main indexes, so that a damaged file is
    refused at start rather than failing requests later. A full integrity check
    reads the whole file (seconds for millions of jobs), so it runs only when
    JOBSCHED_SQLITE_CHECK=1 asks for it."""
    db.execute("SELECT max(seq) FROM jobs").fetchone()
    db.execute("SELECT seq FROM jobs WHERE job_id = ''").fetchone()
    db.execute(
        "SELECT due_at FROM jobs WHERE state IN ('scheduled', 'retrying') "
        "AND due_at IS NOT NULL ORDER BY due_at LIMIT 1"
    ).fetchone()
    db.execute("SELECT max(id) FROM runs").fetchone()
    if os.environ.get("JOBSCHED_SQLITE_CHECK") == "1":
        result = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if result != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {result}")
