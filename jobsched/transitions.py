"""How a job changes: pure functions from (job, event, now) to the next job value.

The engine fetches a job, asks one of these for its next value, and writes it
back guarded by the state it read. Keeping the rules here, free of I/O, makes
every store apply exactly the same rules and lets tests pin them directly.
"""

from __future__ import annotations

import logging
import random

from jobsched.errors import PreconditionFailed
from jobsched.jobs import FINAL_STATES, Job, JobState, RetryDecision, decide_retry
from jobsched.policies import count_between

S = JobState
log = logging.getLogger("jobsched.transitions")


def _released(job: Job, now: int, started: int, **changes: object) -> Job:
    """The job after a run: lease dropped, run time stamped."""
    return job.evolve(
        updated_at=now, last_run_at=started, locked_by=None, locked_until=None, **changes
    )


def on_claim(job: Job, now: int) -> Job:
    """A recurring job taken for a run is due again at its first occurrence
    strictly after ``now``, however many occurrences were missed (coalesce).

    The occurrences merged into this run are not run on their own, so they are
    counted in ``skipped`` and logged: a skipped run is never silent. A retry
    is not an occurrence, so a retry's claim merges nothing.
    """
    if not job.recurring:
        return job
    changes: dict[str, object] = {"due_at": job.next_occurrence(now), "updated_at": now}
    if job.attempts == 0 and job.due_at is not None:
        missed = count_between(job, job.due_at, now)
        if missed:
            changes["skipped"] = job.skipped + missed
            log.info("job %s: %d missed occurrences merged into one run", job.job_id, missed)
    return job.evolve(**changes)


def on_success(job: Job, now: int, started: int) -> Job:
    """A run succeeded: the failure count resets.

    A claimed job (running) already had its next due time set by on_claim.
    A manual run never moves a recurring job's schedule, and leaves a paused
    recurring job paused; a one-time job is done either way.
    """
    common = {"runs": job.runs + 1, "attempts": 0}
    if not job.recurring:
        return _released(
            job, now, started, state=S.COMPLETED, due_at=None, paused_from=None, **common
        )
    if job.state is S.PAUSED:
        if job.paused_from is S.RETRYING:
            # The retry it was waiting for is moot; back on the schedule.
            return _released(
                job,
                now,
                started,
                paused_from=S.SCHEDULED,
                due_at=job.next_occurrence(now),
                **common,
            )
        return _released(job, now, started, **common)
    if job.state is S.RETRYING:
        return _released(
            job, now, started, state=S.SCHEDULED, due_at=job.next_occurrence(now), **common
        )
    return _released(job, now, started, state=S.SCHEDULED, **common)


def on_failure(
    job: Job, now: int, started: int, error: str, rng: random.Random
) -> tuple[Job, RetryDecision]:
    """A run failed: retry with backoff while attempts remain, else give up.

    Giving up makes a one-time job dead; a recurring job starts afresh at its
    first occurrence strictly after now. A paused job stays paused, holding the
    state it will resume to.
    """
    decision = decide_retry(job.retry, job.attempts, rng)
    paused = job.state is S.PAUSED
    if decision.retry:
        after = S.RETRYING
        changes: dict[str, object] = {
            "attempts": decision.attempts,
            "due_at": now + decision.backoff_ms,
        }
    elif not job.recurring:
        return (
            _released(
                job,
                now,
                started,
                state=S.DEAD,
                due_at=None,
                paused_from=None,
                attempts=decision.attempts,
                last_error=error,
            ),
            decision,
        )
    else:
        after = S.SCHEDULED
        changes = {"attempts": 0, "due_at": job.next_occurrence(now)}
    if paused:
        changes["paused_from"] = after
    else:
        changes["state"] = after
    return _released(job, now, started, last_error=error, **changes), decision


def check_runnable(job: Job) -> None:
    """execute_job refuses final jobs and jobs a runner already holds."""
    if job.state in FINAL_STATES:
        raise PreconditionFailed(job.job_id, f"is {job.state.value} and cannot be executed")
    if job.state is S.RUNNING:
        raise PreconditionFailed(job.job_id, "is running already")


def cancel(job: Job, now: int) -> Job:
    if job.state in FINAL_STATES:
        raise PreconditionFailed(job.job_id, f"is {job.state.value} and cannot be cancelled")
    return job.evolve(
        state=S.CANCELLED,
        due_at=None,
        paused_from=None,
        locked_by=None,
        locked_until=None,
        updated_at=now,
    )


def pause(job: Job, now: int) -> Job:
    if job.state not in (S.SCHEDULED, S.RETRYING):
        raise PreconditionFailed(job.job_id, f"is {job.state.value} and cannot be paused")
    return job.evolve(state=S.PAUSED, paused_from=job.state, updated_at=now)


def resume(job: Job, now: int) -> Job:
    """Back to the state it was paused from; a recurring job skips the
    occurrences it missed while paused (its next run is after now)."""
    if job.state is not S.PAUSED:
        raise PreconditionFailed(job.job_id, f"is {job.state.value}, not paused")
    state = job.paused_from or S.SCHEDULED
    due = job.due_at
    attempts = job.attempts
    if job.recurring and (due is None or due < now):
        state, due, attempts = S.SCHEDULED, job.next_occurrence(now), 0
    return job.evolve(state=state, due_at=due, attempts=attempts, paused_from=None, updated_at=now)


def requeue(job: Job, now: int) -> Job:
    """retry_job: a dead job back to retrying, due now, with a fresh count."""
    if job.state is not S.DEAD:
        raise PreconditionFailed(
            job.job_id, f"is {job.state.value}; only a dead job can be retried"
        )
    return job.evolve(state=S.RETRYING, due_at=now, attempts=0, updated_at=now)
