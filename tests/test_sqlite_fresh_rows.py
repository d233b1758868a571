"""The SQLite store's narrow insert of fresh jobs (sqlite_schema.FRESH_COLUMNS,
sqlite_sql.fresh_insert) writes exactly the row ``job_to_row`` gives, and
batches that mix fresh jobs with any other kind keep their list order; the
engine's positional ``_new_job`` builds the Job its keyword form did; and a
Client batch mixing fresh specs, re-sent ids and non-default fields reads back
as scheduled."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobsched import Client, JobSpec, ScheduledJob
from jobsched.engine import Engine
from jobsched.errors import JobExists, Malformed
from jobsched.jobs import (
    ONCE,
    IntervalSchedule,
    Job,
    JobOptions,
    JobState,
    RetryPolicy,
)
from jobsched.spec import ScheduleSpec
from jobsched.stores import sqlite_sql as q
from jobsched.stores.sqlite import SQLiteStore
from jobsched.stores.sqlite_schema import (
    COLUMNS,
    FRESH_COLUMNS,
    FRESH_FIXED,
    FRESH_SHAPE,
    fresh_row,
    fresh_shape,
    job_to_row,
)

T0 = 1_705_309_200_000

# A value other than a fresh job's for every Job field but seq (the store's).
OTHER: dict[str, Any] = {
    "job_id": "other",
    "task": "t2",
    "payload_json": '{"a":1}',
    "schedule": IntervalSchedule(1000, T0),
    "state": JobState.PAUSED,
    "due_at": T0 + 5,
    "created_at": T0 + 1,
    "updated_at": T0 + 2,
    "retry": RetryPolicy(max_attempts=7, base_ms=20, max_backoff_ms=900, jitter=True),
    "options": JobOptions(timeout_ms=500, overlap="allow", misfire="all", catchup_window_ms=9),
    "attempts": 2,
    "runs": 3,
    "last_run_at": T0 - 7,
    "last_error": "it's broken",  # a quote: literals are escaped, values bound
    "paused_from": JobState.RETRYING,
    "first_due": T0 + 9,
    "spec_key": "k",
    "skipped": 1,
    "locked_by": "node-1",
    "locked_until": T0 + 60_000,
    "queue": "q2",
    "priority": 4,
    "unique_key": "u",
    "unique_for_ms": 1000,
}


def fresh(job_id: str, due: int = T0, **changes: Any) -> Job:
    job = Job(job_id, "t", '{"to":"a@example.com"}', ONCE, JobState.SCHEDULED, due, T0, T0)
    job.first_due = due
    return dataclasses.replace(job, **changes)


def narrow(job: Job) -> dict[str, Any]:
    """The row the narrow insert writes for ``job``, by column."""
    return {**FRESH_FIXED, **dict(zip(FRESH_COLUMNS, fresh_row(job), strict=True))}


def wide(job: Job) -> dict[str, Any]:
    return dict(zip(COLUMNS, job_to_row(job), strict=True))


def test_every_job_field_is_in_the_fresh_row_or_decides_the_shape() -> None:
    names = {f.name for f in dataclasses.fields(Job)} - {"seq"}
    assert set(OTHER) == names, "a new Job field needs a value here"
    assert set(FRESH_COLUMNS) | set(FRESH_FIXED) == set(COLUMNS)
    base = fresh("a")
    assert fresh_shape(base) == FRESH_SHAPE
    assert narrow(base) == wide(base)
    moved_row = 0
    for name, value in OTHER.items():
        job = dataclasses.replace(base, **{name: value})
        # Either the job is no longer fresh (the wide insert writes it), or the
        # field reaches the narrow row, and that row is job_to_row's.
        if fresh_shape(job) == FRESH_SHAPE:
            assert fresh_row(job) != fresh_row(base), name
            assert narrow(job) == wide(job), name
            moved_row += 1
    assert moved_row == len(FRESH_COLUMNS)


def test_fresh_insert_binds_the_fresh_columns_and_one_stamp() -> None:
    sql = q.fresh_insert(3)
    assert sql.count("?1,") == 3  # touched_ms: one parameter shared by the rows
    assert f"?{1 + 3 * len(FRESH_COLUMNS)}," in sql
    assert f"?{2 + 3 * len(FRESH_COLUMNS)}" not in sql


def _mixed() -> list[Job]:
    """Fresh jobs in runs longer and shorter than a statement, each run
    followed by three jobs that differ from a fresh one in one field (every
    field of OTHER once); some fresh ones at non-default queue, priority, key."""
    jobs: list[Job] = []
    variants = iter(OTHER)
    n = 0
    for run in (150, 1, 0, 230, 3, 99, 100, 101):
        for _ in range(run):
            n += 1
            extra: dict[str, Any] = {}
            if n % 7 == 0:
                extra = {"queue": "mail", "priority": n % 10, "spec_key": f'["s{n}"]'}
            if n % 11 == 0:
                extra["first_due"] = T0 - n  # a re-scheduled job's first due time
            jobs.append(fresh(f"f{n}", T0 + n, **extra))
        for name in (next(variants), next(variants), next(variants)):
            n += 1
            job = dataclasses.replace(fresh(f"o{n}"), **{name: OTHER[name]})
            jobs.append(job if name != "job_id" else dataclasses.replace(job, job_id=f"o{n}"))
    assert next(variants, None) is None
    return jobs


def _rows(store: SQLiteStore) -> list[tuple[Any, ...]]:
    columns = ", ".join(c for c in COLUMNS)
    return store._local().db.execute(f"SELECT seq, {columns} FROM jobs ORDER BY seq").fetchall()


def test_a_mixed_batch_reads_back_equal_in_list_order(tmp_path: Path) -> None:
    jobs = _mixed()
    kinds = [fresh_shape(j) == FRESH_SHAPE for j in jobs]
    assert sum(kinds) > 2 * q.FRESH_ROWS and not all(kinds)
    many = SQLiteStore(str(tmp_path / "many.db"))
    one = SQLiteStore(str(tmp_path / "one.db"))
    try:
        many.insert(fresh("before"))
        one.insert(fresh("before"))
        stored = many.insert_many([dataclasses.replace(j) for j in jobs])
        assert [j.seq for j in stored] == list(range(2, len(jobs) + 2))
        for job in jobs:
            one.insert(dataclasses.replace(job))  # the one-row INSERT names every column
        got = many.get_many([j.job_id for j in jobs])
        assert [got[j.job_id] for j in jobs] == stored
        for job, back in zip(jobs, stored, strict=True):
            assert dataclasses.replace(back, seq=0) == job
        # Byte for byte the rows of the wide insert (touched_ms aside: a clock).
        assert _rows(many) == _rows(one)
    finally:
        many.close()
        one.close()


def test_a_taken_id_in_a_mixed_batch_stores_none(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    try:
        store.insert(fresh("f40"))
        with pytest.raises(JobExists, match="f40"):
            store.insert_many(_mixed())
        assert store.counts() == {JobState.SCHEDULED: 1}
    finally:
        store.close()


@pytest.mark.parametrize(
    "spec",
    [
        ScheduleSpec("t", "{}"),
        ScheduleSpec("t", "[1]", delay_ms=5, job_id="mine", spec_key="k"),
        ScheduleSpec("t", "{}", run_at=T0 + 9),
        ScheduleSpec("t", "{}", interval_ms=60_000, queue="q", priority=3),
        ScheduleSpec("t", "{}", cron="*/5 * * * *", timezone="Europe/Paris"),
        ScheduleSpec(
            "t",
            "{}",
            retry=OTHER["retry"],
            options=OTHER["options"],
            unique_key="u",
            unique_for_ms=5,
        ),
    ],
)
def test_new_job_builds_the_job_its_spec_names(spec: ScheduleSpec, tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    try:
        job = Engine(store)._new_job(spec, T0, "id-1")
        due = job.due_at
        assert due is not None and due >= T0
        assert job == Job(
            job_id="id-1",
            task=spec.task,
            payload_json=spec.payload_json,
            schedule=job.schedule,
            state=JobState.SCHEDULED,
            due_at=due,
            created_at=T0,
            updated_at=T0,
            retry=spec.retry,
            options=spec.options,
            first_due=due,
            spec_key=spec.spec_key,
            queue=spec.queue,
            priority=spec.priority,
            unique_key=spec.unique_key,
            unique_for_ms=spec.unique_for_ms,
        )
    finally:
        store.close()


LATER = datetime(2031, 1, 1, tzinfo=UTC)


def test_a_client_batch_of_fresh_resent_and_non_default_specs(tmp_path: Path) -> None:
    specs: list[Any] = [
        {"task": "mail", "payload": {"to": f"user{i}@example.com"}} for i in range(250)
    ]
    specs[10] = {"task": "mail", "payload": {"i": 10}, "job_id": "mine-10", "run_at": LATER}
    specs[20] = JobSpec(
        "mail", {"i": 20}, delay_ms=60_000, queue="slow", priority=7, max_attempts=9,
        base_ms=5, max_backoff_ms=700, jitter=True, timeout_ms=1500, job_id="mine-20",
    )  # fmt: skip
    specs[30] = {"task": "mail", "interval_ms": 90_000, "overlap": "allow", "misfire": "all"}
    specs[40] = {"task": "mail", "cron": "0 0 1 1 *", "timezone": "Asia/Tokyo"}
    with Client(tmp_path / "jobs.db") as client:
        first = client.schedule_many([specs[10], specs[20]])
        got = client.schedule_many(specs)  # mine-10 and mine-20 are re-sent
        assert client.stats().total == 250
        assert [got[10], got[20]] == first
        assert got[10] == ScheduledJob("mine-10", LATER, False)
        assert got[20].job_id == "mine-20" and not got[20].recurring
        assert got[30].recurring and got[40].recurring
        assert client.schedule_many(specs[10:21:10]) == first  # and again: the same answers
        plain = client.get(got[0].job_id)
        assert (plain.queue, plain.priority, plain.max_attempts, plain.overlap) == (
            "default", 0, 3, "skip",
        )  # fmt: skip
        assert plain.payload == {"to": "user0@example.com"} and plain.state == "scheduled"
        slow = client.get("mine-20")
        assert (slow.queue, slow.priority, slow.max_attempts, slow.base_ms) == ("slow", 7, 9, 5)
        assert (slow.max_backoff_ms, slow.jitter, slow.timeout_ms) == (700, True, 1500)
        assert slow.due_at is not None and slow.due_at > slow.created_at
        every = client.get(got[30].job_id)
        assert every.schedule.interval_ms == 90_000
        assert (every.overlap, every.misfire) == ("allow", "all")
        cron = client.get(got[40].job_id)
        assert (cron.schedule.cron, cron.schedule.timezone) == ("0 0 1 1 *", "Asia/Tokyo")
        ids = [j.job_id for j in client.iter_jobs(page_size=1000)]
        assert ids == ["mine-10", "mine-20"] + [j.job_id for j in got if j not in first]
        # One bad spec after fresh ones: named by its index, nothing written.
        bad = [{"task": "mail"}] * 120 + [{"task": "mail", "priority": 10}]
        with pytest.raises(Malformed) as err:
            client.schedule_many(bad)
        assert err.value.field == "jobs[120].priority"
        assert client.stats().total == 250
