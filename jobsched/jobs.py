"""The domain: a job, its states, its schedule and its retry policy. Pure: no I/O.

States, and who moves a job in and out of each:

- ``scheduled``: waiting for its due time. In: schedule, success of a recurring
  run, resume, final failure of a recurring run. Out: claim (-> running),
  pause, cancel, a failed manual run (-> retrying).
- ``running``: a runner holds it (it was claimed). Out: the runner's outcome.
- ``retrying``: a run failed and another attempt is due at ``due_at``. In:
  failure with attempts left, ``retry_job`` of a dead job. Out: as scheduled.
- ``paused``: not run by ``execute_jobs`` or the dispatcher; ``paused_from``
  remembers whether it was scheduled or retrying. Out: resume, cancel.
- ``completed``, ``dead``, ``cancelled``: final. Only ``retry_job`` takes a
  job out of ``dead``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from jobsched.cron import CronExpr
from jobsched.timefmt import MAX_MS


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    PAUSED = "paused"
    COMPLETED = "completed"
    DEAD = "dead"
    CANCELLED = "cancelled"


ALL_STATES: tuple[JobState, ...] = tuple(JobState)
FINAL_STATES = frozenset({JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED})
# The states execute_jobs and the dispatcher take due jobs from.
RUNNABLE_STATES = frozenset({JobState.SCHEDULED, JobState.RETRYING})

# The queue a job goes to when its spec names none; priorities run 0 (first) to 9.
DEFAULT_QUEUE = "default"
MAX_PRIORITY = 9

# A backoff longer than this is clamped: base_ms * 2**n grows past any useful
# delay (and past year 9999) long before max_attempts runs out.
MAX_BACKOFF_MS = 100 * 365 * 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Once:
    kind: str = "once"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "once"}


@dataclass(frozen=True, slots=True)
class CronSchedule:
    expr: CronExpr
    kind: str = "cron"

    def next_after(self, ms: int) -> int | None:
        found: int | None = self.expr.next_after(ms)
        return found

    def to_json(self) -> dict[str, Any]:
        return {"kind": "cron", "cron": self.expr.text, "timezone": self.expr.tz}


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Every ``interval_ms`` on the grid ``anchor_ms + k * interval_ms``."""

    interval_ms: int
    anchor_ms: int
    kind: str = "interval"

    def next_after(self, ms: int) -> int | None:
        """The first point of the grid strictly after ``ms``; None past year
        9999, as for a cron schedule: no time past MAX_MS is ever handed out."""
        if ms < self.anchor_ms:
            return self.anchor_ms
        k = (ms - self.anchor_ms) // self.interval_ms + 1
        found = self.anchor_ms + k * self.interval_ms
        return found if found <= MAX_MS else None

    def to_json(self) -> dict[str, Any]:
        return {"kind": "interval", "interval_ms": self.interval_ms}


Schedule = Once | CronSchedule | IntervalSchedule
ONCE = Once()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    base_ms: int = 1000
    max_backoff_ms: int | None = None
    jitter: bool = False


DEFAULT_RETRY = RetryPolicy()


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """What a failure leads to: another attempt after ``backoff_ms``, or give up."""

    attempts: int
    retry: bool
    backoff_ms: int = 0


def decide_retry(
    policy: RetryPolicy, failures_before: int, rng: random.Random, from_ms: int | None = None
) -> RetryDecision:
    """The failure count goes up by one; retry while it is below max_attempts.

    ``backoff_ms = base_ms * 2**n`` for the new count n, capped by
    ``max_backoff_ms``; with jitter, a uniformly random part of that (full
    jitter), so that many jobs failing together do not retry together.

    ``from_ms``, when given, is the time the backoff is added to: the backoff
    is cut so that the retry is due no later than MAX_MS (year 9999), and the
    backoff reported is the one applied.
    """
    n = failures_before + 1
    if n >= policy.max_attempts:
        return RetryDecision(attempts=n, retry=False)
    backoff = policy.base_ms << n if n < 64 else MAX_BACKOFF_MS
    if policy.max_backoff_ms is not None:
        backoff = min(backoff, policy.max_backoff_ms)
    backoff = min(backoff, MAX_BACKOFF_MS)
    if from_ms is not None:
        backoff = max(0, min(backoff, MAX_MS - from_ms))
    if policy.jitter and backoff > 0:
        backoff = rng.randint(0, backoff)
    return RetryDecision(attempts=n, retry=True, backoff_ms=backoff)


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Real-time running options (see docs/protocol.md); shared when default."""

    timeout_ms: int | None = None
    overlap: str = "skip"  # skip | allow
    misfire: str = "coalesce"  # coalesce | skip | all
    catchup_window_ms: int | None = None


DEFAULT_OPTIONS = JobOptions()


@dataclass(slots=True)
class Job:
    """One job. Values are replaced, never mutated after a store has them."""

    job_id: str
    task: str
    payload_json: str  # compact JSON; kept as text, it is what stores and size checks want
    schedule: Schedule
    state: JobState
    due_at: int | None
    created_at: int
    updated_at: int
    retry: RetryPolicy = DEFAULT_RETRY
    options: JobOptions = DEFAULT_OPTIONS
    attempts: int = 0
    runs: int = 0
    last_run_at: int | None = None
    last_error: str | None = None
    # When a job is paused: the state to resume to (scheduled or retrying).
    paused_from: JobState | None = None
    # The due time the first reply announced, so an idempotent re-send of the
    # same spec gets the same reply after the job has moved on.
    first_due: int | None = None
    # Canonical text of the caller's spec when the caller chose the job id.
    spec_key: str | None = None
    skipped: int = 0  # occurrences skipped by overlap or misfire policy
    seq: int = 0  # scheduling order, assigned by the store on insert
    locked_by: str | None = None
    locked_until: int | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0  # 0 runs first
    # While a job with this key is not final, scheduling another returns it
    # (docs/queues.md); unique_for_ms extends that past its end.
    unique_key: str | None = None
    unique_for_ms: int | None = None

    @property
    def recurring(self) -> bool:
        return not isinstance(self.schedule, Once)

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` (field names; another name raises
        AttributeError). Not ``dataclasses.replace``: that reads every field
        into keyword arguments and calls ``__init__``, 5 us a call on the
        dispatcher's path (two or three a run); this is about 1.3 us."""
        new = _copy_job(self)
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def next_occurrence(self, after_ms: int) -> int | None:
        """The schedule's first occurrence strictly after ``after_ms``."""
        schedule = self.schedule
        if isinstance(schedule, Once):
            return None
        return schedule.next_after(after_ms)


def _copier() -> Callable[[Job], Job]:
    """A function that copies a Job field by field (generated: one attribute
    read and write per field, no loop, no keyword arguments)."""
    body = "".join(f"    new.{f.name} = job.{f.name}\n" for f in fields(Job))
    head = "def copy_job(job, new_object=object.__new__):\n    new = new_object(Job)\n"
    namespace: dict[str, Any] = {}
    exec(f"{head}{body}    return new\n", {"Job": Job}, namespace)  # text built from Job's fields
    copy_job: Callable[[Job], Job] = namespace["copy_job"]
    return copy_job


_copy_job = _copier()
