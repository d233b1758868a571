"""The state changes and retry decisions as pure functions: no store, no engine.

Each test pins one rule of jobsched.transitions or jobsched.jobs.decide_retry
on plain Job values, so a rule can be read (and broken) in one place.
"""

from __future__ import annotations

import random

import pytest

from jobsched import policies, transitions
from jobsched.errors import PreconditionFailed
from jobsched.jobs import (
    ONCE,
    IntervalSchedule,
    Job,
    JobOptions,
    JobState,
    RetryPolicy,
    decide_retry,
)
from jobsched.timefmt import MAX_MS

S = JobState
T0 = 1_705_309_200_000  # 2024-01-15T09:00:00Z
RNG = random.Random(0)


def once(**changes: object) -> Job:
    job = Job("j", "t", "{}", ONCE, S.SCHEDULED, T0, T0, T0)
    return job.evolve(**changes)


def every(interval_ms: int, **changes: object) -> Job:
    job = Job("i", "t", "{}", IntervalSchedule(interval_ms, T0), S.SCHEDULED, T0, T0, T0)
    return job.evolve(**changes)


# -- retry decisions -------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures_before", "expected"),
    [(0, 200), (1, 400), (2, 800), (3, 1600)],
)
def test_backoff_is_base_times_two_to_the_new_failure_count(
    failures_before: int, expected: int
) -> None:
    decision = decide_retry(RetryPolicy(max_attempts=10, base_ms=100), failures_before, RNG)
    assert decision.retry and decision.attempts == failures_before + 1
    assert decision.backoff_ms == expected


def test_the_last_attempt_gives_up() -> None:
    decision = decide_retry(RetryPolicy(max_attempts=3, base_ms=100), 2, RNG)
    assert decision == decision.__class__(attempts=3, retry=False)


def test_max_backoff_caps_and_full_jitter_stays_within_it() -> None:
    policy = RetryPolicy(max_attempts=50, base_ms=1000, max_backoff_ms=5000, jitter=True)
    rng = random.Random(7)
    seen = {decide_retry(policy, 30, rng).backoff_ms for _ in range(200)}
    assert max(seen) <= 5000 and min(seen) >= 0 and len(seen) > 50


# -- runs ------------------------------------------------------------------------


def test_failure_with_attempts_left_retries_after_the_backoff() -> None:
    job = once(state=S.RUNNING, locked_by="n")
    new, decision = transitions.on_failure(job, T0 + 10, T0, "boom", RNG)
    assert decision.retry and new.state is S.RETRYING
    assert new.due_at == T0 + 10 + decision.backoff_ms
    assert new.locked_by is None and new.last_error == "boom" and new.attempts == 1


def test_final_failure_of_a_one_time_job_is_dead() -> None:
    job = once(state=S.RUNNING, attempts=2, retry=RetryPolicy(max_attempts=3))
    new, decision = transitions.on_failure(job, T0, T0, "boom", RNG)
    assert not decision.retry and new.state is S.DEAD and new.due_at is None


def test_final_failure_of_a_recurring_job_starts_afresh_on_its_schedule() -> None:
    job = every(1000, state=S.RUNNING, attempts=2, retry=RetryPolicy(max_attempts=3))
    new, _ = transitions.on_failure(job, T0 + 2500, T0 + 2500, "boom", RNG)
    assert new.state is S.SCHEDULED and new.attempts == 0 and new.due_at == T0 + 3000


def test_a_retry_due_past_year_9999_is_capped_to_the_last_instant() -> None:
    far = MAX_MS - 1000
    job = once(state=S.RUNNING, retry=RetryPolicy(max_attempts=5, base_ms=10**12))
    new, decision = transitions.on_failure(job, far, far, "boom", RNG)
    assert decision.retry and new.due_at == MAX_MS


def test_time_moving_backwards_never_makes_a_job_due_before_its_last_run() -> None:
    # Ran at T0 + 10 s; a caller's current_time then goes back to T0.
    job = every(1000, last_run_at=T0 + 10_000, due_at=T0 + 11_000)
    failed, decision = transitions.on_failure(job, T0, T0, "boom", RNG)
    assert failed.due_at is not None and failed.due_at >= T0 + 10_000 + decision.backoff_ms
    gave_up = job.evolve(retry=RetryPolicy(max_attempts=1))
    after, _ = transitions.on_failure(gave_up, T0, T0, "boom", RNG)
    assert after.due_at == T0 + 11_000
    paused = job.evolve(state=S.PAUSED, paused_from=S.SCHEDULED, due_at=T0 + 500)
    resumed = transitions.resume(paused, T0 + 600)
    assert resumed.due_at == T0 + 11_000


def test_success_resets_the_failure_count_and_completes_a_one_time_job() -> None:
    job = once(state=S.RUNNING, attempts=2, locked_by="n")
    new = transitions.on_success(job, T0 + 5, T0)
    assert new.state is S.COMPLETED and new.attempts == 0 and new.runs == 1
    assert new.last_run_at == T0 and new.locked_by is None


def test_a_lost_run_counts_as_an_attempt() -> None:
    job = once(state=S.RUNNING, locked_by="dead-node", retry=RetryPolicy(max_attempts=1))
    new, decision = transitions.on_lost(job, T0, RNG)
    assert not decision.retry and new.state is S.DEAD
    assert new.last_error is not None and "dead-node" in new.last_error
    retried, decision = transitions.on_lost(job.evolve(retry=RetryPolicy(3, 100)), T0, RNG)
    assert decision.retry and retried.state is S.RETRYING and retried.attempts == 1


def test_put_back_after_shutdown_is_not_an_attempt() -> None:
    job = every(1000, state=S.RUNNING, due_at=T0 + 5000, locked_by="n", locked_until=T0)
    back = transitions.put_back(job, T0 + 1000, T0 + 2000)
    assert back.state is S.SCHEDULED and back.due_at == T0 + 1000 and back.attempts == 0
    assert back.locked_by is None and back.locked_until is None


# -- claims: misfire, and execute_jobs as its coalesce case ----------------------


def test_execute_jobs_coalesces_whatever_the_jobs_misfire_policy() -> None:
    job = every(1000, state=S.RUNNING, due_at=T0)
    job = job.evolve(options=JobOptions(misfire="skip"))
    claim = policies.on_claim(job, T0 + 10_500, misfire="coalesce")
    assert claim.run and claim.due == T0
    assert claim.job.due_at == T0 + 11_000 and claim.skipped == 10
    skipped = policies.on_claim(job, T0 + 10_500)
    assert not skipped.run and skipped.job.state is S.SCHEDULED


def test_a_retry_claim_merges_no_occurrence() -> None:
    job = every(1000, state=S.RUNNING, due_at=T0 + 300, attempts=1)
    claim = policies.on_claim(job, T0 + 5_500)
    assert claim.run and claim.skipped == 0 and claim.job.due_at == T0 + 6000


# -- control ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.COMPLETED, S.DEAD, S.CANCELLED])
def test_final_jobs_refuse_every_change(state: JobState) -> None:
    job = once(state=state, due_at=None)
    for change in (transitions.cancel, transitions.pause, transitions.resume):
        with pytest.raises(PreconditionFailed):
            change(job, T0)
    with pytest.raises(PreconditionFailed):
        transitions.check_runnable(job)


def test_pause_then_resume_returns_to_the_state_it_was_paused_from() -> None:
    job = once(state=S.RETRYING, due_at=T0 + 100, attempts=1)
    paused = transitions.pause(job, T0)
    assert paused.state is S.PAUSED and paused.paused_from is S.RETRYING
    resumed = transitions.resume(paused, T0 + 50)
    assert resumed.state is S.RETRYING and resumed.due_at == T0 + 100 and resumed.attempts == 1


def test_requeue_only_from_dead_with_a_fresh_count() -> None:
    dead = once(state=S.DEAD, due_at=None, attempts=3)
    back = transitions.requeue(dead, T0)
    assert back.state is S.RETRYING and back.due_at == T0 and back.attempts == 0
    with pytest.raises(PreconditionFailed):
        transitions.requeue(once(), T0)


def test_evolve_copies_every_field_and_changes_only_those_named() -> None:
    """``Job.evolve`` is a generated field-by-field copy (dataclasses.replace
    cost 5 us a call on the dispatcher's path): a field added to Job must be
    copied too, and a name that is not a field must fail, not be dropped."""
    from dataclasses import fields

    job = Job(
        "id", "t", '{"a": 1}', IntervalSchedule(60_000, T0), S.RUNNING, T0, T0 - 5, T0 - 4,
        RetryPolicy(7, 10, 100, True), JobOptions(5, "allow", "skip", 9), 2, 3, T0 - 3, "boom",
        S.RETRYING, T0 - 2, "key", 4, 11, "me", T0 + 9, "q", 5, "u", 99,
    )  # fmt: skip
    assert all(getattr(job, f.name) not in (None, 0, f.default) for f in fields(Job))
    same = job.evolve()
    assert same == job and same is not job
    changed = job.evolve(state=S.COMPLETED, locked_by=None)
    assert (changed.state, changed.locked_by) == (S.COMPLETED, None)
    assert (job.state, job.locked_by) == (S.RUNNING, "me")
    assert changed == Job(**{**{f.name: getattr(job, f.name) for f in fields(Job)},
                             "state": S.COMPLETED, "locked_by": None})  # fmt: skip
    with pytest.raises(AttributeError):
        job.evolve(no_such_field=1)
