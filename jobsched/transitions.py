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
from jobsched.timefmt import MAX_MS

S = JobState
log = logging.getLogger("jobsched.transitions")
LOST = "lost: the lease of {owner} expired (its runner stopped)"


def _released(job: Job, now: int, started: int, **changes: object) -> Job:
    """The job after a run: lease dropped, run time stamped."""
    return job.evolve(
        updated_at=now, last_run_at=started, locked_by=None, locked_until=None, **changes
    )


def _floor(job: Job, now: int) -> int:
    """The time the job's next due time is computed from: ``now``, but never
    before its last run. A caller's logical ``current_time`` may move
    backwards; a job must not come due before a run it has already had."""
    last = job.last_run_at
    return now if last is None or now >= last else last


def _retry_at(job: Job, now: int, backoff_ms: int) -> int:
    """When a retry is due: after the backoff, never past the last instant
    the formats carry (year 9999): a later time is capped to it."""
    return min(_floor(job, now) + backoff_ms, MAX_MS)


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
                due_at=job.next_occurrence(_floor(job, now)),
                **common,
            )
        return _released(job, now, started, **common)
    if job.state is S.RETRYING:
        return _released(
            job,
            now,
            started,
            state=S.SCHEDULED,
            due_at=job.next_occurrence(_floor(job, now)),
            **common,
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
    # The backoff is cut so the retry falls within the year 9999: the reply's
    # backoff_ms is then the one applied.
    decision = decide_retry(job.retry, job.attempts, rng, from_ms=_floor(job, now))
    paused = job.state is S.PAUSED
    if decision.retry:
        after = S.RETRYING
        changes: dict[str, object] = {
            "attempts": decision.attempts,
            "due_at": _retry_at(job, now, decision.backoff_ms),
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
        changes = {"attempts": 0, "due_at": job.next_occurrence(_floor(job, now))}
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
        state, due, attempts = S.SCHEDULED, job.next_occurrence(_floor(job, now)), 0
    return job.evolve(state=state, due_at=due, attempts=attempts, paused_from=None, updated_at=now)


def requeue(job: Job, now: int) -> Job:
    """retry_job: a dead job back to retrying, due now, with a fresh count."""
    if job.state is not S.DEAD:
        raise PreconditionFailed(
            job.job_id, f"is {job.state.value}; only a dead job can be retried"
        )
    return job.evolve(state=S.RETRYING, due_at=now, attempts=0, updated_at=now)


def on_lost(job: Job, now: int, rng: random.Random) -> tuple[Job, RetryDecision]:
    """A running job whose holder stopped renewing its lease (it crashed).

    The crash rule (docs/design.md): the lost run counts as a failed attempt,
    through the retry rules, so a job that kills its runner every time ends
    dead instead of looping forever; while attempts remain it runs again
    after its backoff.
    """
    error = LOST.format(owner=job.locked_by)
    if job.paused_from is not None:
        # Only a paused job has paused_from: this one was lost in a manual run
        # (execute_job), and a paused job stays paused.
        job = job.evolve(state=S.PAUSED)
    return on_failure(job, now, job.updated_at, error, rng)


def put_back(job: Job, due: int, now: int) -> Job:
    """A claimed job whose handler did not end before shutdown: runnable again
    at the occurrence it was running (not an attempt: nothing failed). A
    paused job (a manual run's: only a paused job has paused_from) stays paused."""
    if job.paused_from is not None:
        return job.evolve(state=S.PAUSED, locked_by=None, locked_until=None, updated_at=now)
    state = S.RETRYING if job.attempts else S.SCHEDULED
    return job.evolve(state=state, due_at=due, locked_by=None, locked_until=None, updated_at=now)


def unclaim(job: Job, now: int, due_at: int | None, skipped: int) -> Job:
    """A claim given up without a run (misfire=skip): back to scheduled."""
    return job.evolve(
        state=S.SCHEDULED,
        due_at=due_at,
        skipped=skipped,
        locked_by=None,
        locked_until=None,
        updated_at=now,
    )
