"""The memory store's compact form of a pending job: a short tuple, not a Job.

A million jobs waiting for their time are most of what an in-memory
scheduler holds, and most of their 25 fields are the same from one job to the
next. A pending job (scheduled or retrying, with a due time) is therefore
kept as a record of four tuples' worth of pointers:

    (key, job_id, payload_json, created_at, shape)          # the usual job
    (key, job_id, payload_json, created_at, shape, extra)   # anything else

- ``key`` is ``due_at << SEQ_BITS | seq``: one int that orders the due heaps
  by (due_at, seq) on its own, so the record itself is the heap entry (no
  second tuple per job), and two records never compare past their first item.
- ``shape`` holds the fields jobs share: task, state, schedule, retry policy,
  options, queue, priority, paused_from, locked_by. Equal shapes are one
  object (``Packer``), so a job pays 8 bytes for all of them.
- ``extra`` holds the fields that are the job's own, when any differs from
  a freshly scheduled job's: updated_at (when not created_at), attempts,
  runs, skipped, last_run_at, last_error, first_due (when not due_at),
  spec_key, locked_until, unique_key, unique_for_ms.

Every other job (running, paused, final, or without a due time) stays a Job:
those are few, or (final ones) on their way out. ``unpack`` builds the Job
value back, field for field (promise 5 of ``stores.base``: every field round
trips); readers get a new Job per read, never the record.
"""

from __future__ import annotations

from typing import Any

from jobsched.jobs import Job, JobState

SEQ_BITS = 40  # 10**12 inserts per store before a job falls back to a plain Job
SEQ_MASK = (1 << SEQ_BITS) - 1
_RUNNING, _SCHEDULED, _RETRYING = JobState.RUNNING, JobState.SCHEDULED, JobState.RETRYING

#: A pending job's record (see the module docstring).
Record = tuple[Any, ...]
#: What the store holds per job: a record, or a Job for every other job.
Item = Record | Job

# Where things are in a record and its shape.
KEY, JOB_ID, SHAPE = 0, 1, 4
TASK, STATE, QUEUE, PRIORITY = 0, 1, 5, 6
UNIQUE_KEY = 9  # in extra


def unpack(rec: Record, owner: str | None = None, until: int | None = None) -> Job:
    """The Job a record stands for; with ``owner``, claimed by it (running,
    leased until ``until``): a claim builds its Job in one step."""
    key, job_id, payload, created, shape = rec[0], rec[1], rec[2], rec[3], rec[4]
    task, state, schedule, retry, options, queue, priority, paused_from, locked_by = shape
    due = key >> SEQ_BITS
    if len(rec) == 5:
        updated, attempts, runs, skipped, last_run_at, last_error = created, 0, 0, 0, None, None
        first_due, spec_key, locked_until, unique_key, unique_for_ms = due, None, None, None, None
    else:
        (updated, attempts, runs, skipped, last_run_at, last_error) = rec[5][:6]
        first_due, spec_key, locked_until, unique_key, unique_for_ms = rec[5][6:]
    if owner is not None:
        state, locked_by, locked_until = _RUNNING, owner, until
    return Job(
        job_id, task, payload, schedule, state, due, created, updated, retry, options,
        attempts, runs, last_run_at, last_error, paused_from, first_due, spec_key, skipped,
        key & SEQ_MASK, locked_by, locked_until, queue, priority, unique_key, unique_for_ms,
    )  # fmt: skip


def state_of(item: Item) -> JobState:
    return item[SHAPE][STATE] if isinstance(item, tuple) else item.state


def unique_key_of(item: Item) -> str | None:
    if not isinstance(item, tuple):
        return item.unique_key
    return None if len(item) == 5 else item[5][UNIQUE_KEY]


def seq_of(item: Item) -> int:
    return item[KEY] & SEQ_MASK if isinstance(item, tuple) else item.seq


class Packer:
    """Makes records, sharing what jobs have in common.

    Equal shapes are made one object. The cache is by task (a string, whose
    hash Python keeps): hashing a whole shape costs more than the schedule it
    would save, while comparing with the task's last shape is one tuple
    comparison that mostly meets the very same objects. It is emptied when it
    grows past ``LIMIT`` tasks, so shapes whose jobs are gone cannot pile up.

    A creation time equal to the previous record's is that record's int object
    (32 bytes saved): jobs scheduled in the same millisecond, as a node busy
    enough to hold a million of them schedules them, share it."""

    LIMIT = 1024
    __slots__ = ("by_task", "created")

    def __init__(self) -> None:
        self.by_task: dict[str, tuple[Any, ...]] = {}
        self.created: int | None = None

    def pack(self, job: Job) -> Item:
        """The record for ``job`` if it is pending, else ``job`` itself."""
        due, state = job.due_at, job.state
        # Identity, not ``in RUNNABLE_STATES``: an enum's hash is Python code.
        if due is None or (state is not _SCHEDULED and state is not _RETRYING):
            return job
        if job.seq > SEQ_MASK:
            return job
        task = job.task
        shape = (
            task, state, job.schedule, job.retry, job.options,
            job.queue, job.priority, job.paused_from, job.locked_by,
        )  # fmt: skip
        known = self.by_task.get(task)
        if known is not None and known == shape:
            shape = known
        else:
            if len(self.by_task) >= self.LIMIT:
                self.by_task.clear()
            self.by_task[task] = shape
        key = due << SEQ_BITS | job.seq
        created = job.created_at
        if created == self.created:
            created = self.created
        else:
            self.created = created
        if (  # the job's own fields are those of a job just scheduled
            job.updated_at == created
            and job.first_due == due
            and not (job.attempts or job.runs or job.skipped)
            and job.last_run_at is None
            and job.last_error is None
            and job.spec_key is None
            and job.locked_until is None
            and job.unique_key is None
            and job.unique_for_ms is None
        ):
            return (key, job.job_id, job.payload_json, created, shape)
        return (key, job.job_id, job.payload_json, created, shape, _extra(job))


def _extra(job: Job) -> tuple[Any, ...]:
    return (
        job.updated_at, job.attempts, job.runs, job.skipped, job.last_run_at, job.last_error,
        job.first_due, job.spec_key, job.locked_until, job.unique_key, job.unique_for_ms,
    )  # fmt: skip
